//! `gpuaas login`, `gpuaas logout` and `gpuaas profile …`: credentials kept as profiles of the
//! config file.

use crate::Ctx;
use crate::client::{ApiClient, CliError, Credential, Req};
use crate::config::{self, Config, Profile};
use crate::output::{self, Format};
use api_types::platform::{LoginRequest, Me, RefreshRequest, TokenResponse};
use clap::{Args, Subcommand};
use std::io::{BufRead, Read, Write};

#[derive(Args)]
pub struct LoginArgs {
    /// Log in as this user (default: asked for on the terminal).
    #[arg(long)]
    email: Option<String>,
    /// Read the password from standard input (for scripts), not from the terminal.
    #[arg(long)]
    password_stdin: bool,
    /// Save this API key (`gpk_…`, or `-` to read it from standard input) instead of logging in
    /// with a password; it is checked first.
    #[arg(long, conflicts_with_all = ["email", "password_stdin"])]
    api_key: Option<String>,
}

#[derive(Subcommand)]
pub enum ProfileVerb {
    /// The profiles of the config file (never their secrets).
    List,
    /// Make a profile the current one.
    Use { name: String },
    /// Who the profile's credential is, and where it may act (`GET /v1/me`).
    Whoami,
    /// Set what the profile acts in by default (an empty value clears it).
    Set {
        /// The org org-scoped commands use when `--org` is not given.
        #[arg(long)]
        org: Option<String>,
        /// The project requests act in when `--project` is not given (id or name).
        #[arg(long = "default-project")]
        default_project: Option<String>,
    },
}

/// Reads the config under its lock, changes it and writes it back.
fn update_config(
    ctx: &mut Ctx,
    change: impl FnOnce(&mut Config) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let _lock = config::lock(&ctx.config_path)?;
    let mut cfg = Config::load(&ctx.config_path)?;
    change(&mut cfg)?;
    cfg.save(&ctx.config_path)?;
    ctx.config = cfg;
    Ok(())
}

fn read_stdin_secret(what: &str) -> Result<String, CliError> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| CliError::Other(format!("cannot read the {what} from standard input: {e}")))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return Err(CliError::Usage(format!("no {what} on standard input")));
    }
    Ok(text.to_string())
}

/// The email and password to log in with: flags, standard input, or the terminal.
fn credentials(args: &LoginArgs) -> Result<(String, String), CliError> {
    let email = match &args.email {
        Some(e) => e.clone(),
        None if args.password_stdin => {
            return Err(CliError::Usage(
                "--password-stdin needs --email (standard input holds the password)".into(),
            ));
        }
        None => {
            eprint!("Email: ");
            let _ = std::io::stderr().flush();
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| CliError::Other(format!("cannot read the email: {e}")))?;
            line.trim().to_string()
        }
    };
    if email.is_empty() {
        return Err(CliError::Usage("no email given".into()));
    }
    let password = if args.password_stdin {
        read_stdin_secret("password")?
    } else {
        rpassword::prompt_password("Password: ").map_err(|e| {
            CliError::Usage(format!(
                "cannot read a password from the terminal ({e}): pipe it with --password-stdin"
            ))
        })?
    };
    Ok((email, password))
}

pub async fn login(ctx: &mut Ctx, args: LoginArgs) -> Result<(), CliError> {
    let name = ctx.profile_flag.clone().unwrap_or_else(|| "default".into());
    let existing = ctx.config.profile(&name).cloned().unwrap_or_default();
    let api_url = ctx
        .api_url_flag
        .clone()
        .or_else(|| existing.api_url.clone())
        .unwrap_or_else(|| config::DEFAULT_API_URL.into());
    let api_url = api_url.trim_end_matches('/').to_string();
    let anonymous = ApiClient::new(&api_url, Credential::None, None);
    let mut profile = Profile {
        api_url: Some(api_url.clone()),
        project: existing.project.clone(),
        org: existing.org.clone(),
        extra: existing.extra.clone(),
        ..Profile::default()
    };
    let me: Me = if let Some(key) = &args.api_key {
        let key = if key == "-" {
            read_stdin_secret("API key")?
        } else {
            key.clone()
        };
        if !key.starts_with("gpk_") {
            return Err(CliError::Usage("an API key starts with gpk_".into()));
        }
        let me = ApiClient::new(&api_url, Credential::Static(key.clone()), None)
            .send(Req::get("/v1/me"))
            .await?;
        profile.api_key = Some(key);
        me
    } else {
        let (email, password) = credentials(&args)?;
        let tokens: TokenResponse = anonymous
            .public(Req::post("/v1/auth/login").json(&LoginRequest { email, password }))
            .await?;
        let me = ApiClient::new(
            &api_url,
            Credential::Static(tokens.access_token.clone()),
            None,
        )
        .send(Req::get("/v1/me"))
        .await?;
        profile.access_token = Some(tokens.access_token);
        profile.refresh_token = Some(tokens.refresh_token);
        profile.access_expires_at = Some(config::now_unix() + tokens.expires_in as i64);
        me
    };
    // The session this profile held before ends (best effort): nothing else has its tokens.
    if let Some(old) = existing.refresh_token.clone()
        && existing.api_url.as_deref().map(|u| u.trim_end_matches('/')) == Some(api_url.as_str())
    {
        let _ = anonymous
            .public::<()>(Req::post("/v1/auth/logout").json(&RefreshRequest { refresh_token: old }))
            .await;
    }
    let saved = profile.clone();
    update_config(ctx, |cfg| {
        cfg.profiles.insert(name.clone(), saved);
        cfg.current = Some(name.clone());
        Ok(())
    })?;
    let kind = profile.credential_kind();
    match ctx.format {
        Format::Json => output::json(&serde_json::json!({
            "profile": name,
            "api_url": api_url,
            "credential": kind,
            "me": me,
        })),
        Format::Table => println!(
            "Logged in to {api_url} as {} ({kind}); profile {name} is now the current one.",
            me.name
        ),
    }
    Ok(())
}

pub async fn logout(ctx: &mut Ctx) -> Result<(), CliError> {
    let Some(name) = ctx.profile_name.clone() else {
        return Err(CliError::Usage(
            "no profile to log out of: none is current".into(),
        ));
    };
    let Some(profile) = ctx.config.profile(&name).cloned() else {
        return Err(CliError::Usage(format!("no profile named {name}")));
    };
    let mut note = None;
    if let Some(refresh_token) = profile.refresh_token.clone() {
        let api_url = ctx
            .api_url_flag
            .clone()
            .or(profile.api_url.clone())
            .unwrap_or_else(|| config::DEFAULT_API_URL.into());
        let result = ApiClient::new(&api_url, Credential::None, None)
            .public::<()>(Req::post("/v1/auth/logout").json(&RefreshRequest { refresh_token }))
            .await;
        match result {
            Ok(()) => {}
            Err(CliError::Api(p)) if p.status == 401 => {
                note = Some("the session had already ended".to_string());
            }
            Err(e) => return Err(e),
        }
    }
    if profile.api_key.is_some() {
        note = Some(
            "the API key is forgotten here but stays valid until revoked (gpuaas apikey revoke ID)"
                .into(),
        );
    }
    update_config(ctx, |cfg| {
        if let Some(p) = cfg.profiles.get_mut(&name) {
            p.clear_credentials();
        }
        Ok(())
    })?;
    if let Some(note) = &note {
        eprintln!("note: {note}");
    }
    match ctx.format {
        Format::Json => output::json(&serde_json::json!({"profile": name, "logged_out": true})),
        Format::Table => println!("Logged out of profile {name}."),
    }
    Ok(())
}

pub async fn profile(ctx: &mut Ctx, verb: ProfileVerb) -> Result<(), CliError> {
    match verb {
        ProfileVerb::List => {
            output::print_profiles(ctx.format, &ctx.config);
            Ok(())
        }
        ProfileVerb::Use { name } => {
            if ctx.config.profile(&name).is_none() {
                return Err(CliError::Usage(format!(
                    "no profile named {name} (see `gpuaas profile list`)"
                )));
            }
            update_config(ctx, |cfg| {
                if !cfg.profiles.contains_key(&name) {
                    return Err(CliError::Usage(format!("no profile named {name}")));
                }
                cfg.current = Some(name.clone());
                Ok(())
            })?;
            match ctx.format {
                Format::Json => output::json(&serde_json::json!({"current": name})),
                Format::Table => println!("Profile {name} is now the current one."),
            }
            Ok(())
        }
        ProfileVerb::Whoami => {
            let me: Me = ctx.client()?.send(Req::get("/v1/me")).await?;
            output::print_me(ctx.format, ctx.profile_name.as_deref(), &me);
            Ok(())
        }
        ProfileVerb::Set {
            org,
            default_project,
        } => {
            let Some(name) = ctx.profile_name.clone() else {
                return Err(CliError::Usage(
                    "no profile selected: name one with --profile, or log in first".into(),
                ));
            };
            let clear = |v: String| Some(v).filter(|v| !v.trim().is_empty());
            update_config(ctx, |cfg| {
                let Some(p) = cfg.profiles.get_mut(&name) else {
                    return Err(CliError::Usage(format!("no profile named {name}")));
                };
                if let Some(org) = org {
                    p.org = clear(org);
                }
                if let Some(project) = default_project {
                    p.project = clear(project);
                }
                Ok(())
            })?;
            output::print_profiles(ctx.format, &ctx.config);
            Ok(())
        }
    }
}
