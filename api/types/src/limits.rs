//! What a client may send: for every string field of every request body, and every query
//! parameter, a length and a character rule. The API checks them before anything reaches a
//! handler (so before any SQL: Postgres refuses NUL, and nothing unbounded is stored or echoed),
//! with one helper ([`Rule::check`]); `doc/api/openapi.yaml` states the same rules as
//! `minLength`/`maxLength` and `pattern` (or `format`), and the contract test
//! (`e2e/tests/e2e/openapi.rs`) keeps the two equal.
//!
//! Lengths count characters (Unicode scalar values), as JSON Schema's `maxLength` does.

use crate::billing::{
    AddPaymentMethodRequest, MeteringRunRequest, NewPriceBookVersion, PayRequest,
    SetBillingModeRequest, SetSpendLimitRequest, TopUpRequest, UsageEventBatch,
};
use crate::gpuaas::{CreateInstanceRequest, DrainNodeRequest, RegisterNodeRequest};
use crate::platform::{
    AcceptInvitationRequest, CreateApiKeyRequest, CreateInvitationRequest, CreateJoinTokenRequest,
    CreateOrgRequest, CreateProjectRequest, CreateServiceAccountRequest, LoginRequest,
    RefreshRequest, SetPlanRequest, SetQuotaRequest, SetRoleRequest, SignupRequest,
};

/// The characters a string may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chars {
    /// `a-z`, `0-9` and `-`, not starting with `-`: names of orgs, projects, service accounts
    /// and instances.
    Slug,
    /// Letters, digits, `.` and `-`: host names.
    Host,
    /// Letters, digits and `.`, `_`, `:`, `+`, `-`: ids, versions, names of values, cursors.
    Ident,
    /// Printable ASCII without space (`!` to `~`): secrets and hardware ids.
    Token,
    /// Base64url without padding: keys.
    Base64Url,
    /// Anything but control characters (U+0000-U+001F, U+007F-U+009F): one line of text.
    Line,
    /// As `Line`, but tab, newline and carriage return are allowed: commands.
    Text,
    /// An email address (`format: email`): `local@domain.tld`, no whitespace or control
    /// characters.
    Email,
}

impl Chars {
    pub fn allows(self, s: &str) -> bool {
        let ascii = |ok: fn(u8) -> bool| s.bytes().all(ok);
        match self {
            Self::Slug => {
                ascii(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !s.starts_with('-')
            }
            Self::Host => ascii(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'),
            Self::Ident => ascii(|b| b.is_ascii_alphanumeric() || b"._:+-".contains(&b)),
            Self::Token => ascii(|b| b.is_ascii_graphic()),
            Self::Base64Url => ascii(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            Self::Line => !s.chars().any(char::is_control),
            Self::Text => !s
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')),
            // The shape the domain checks too (`users::check_email`): a request is refused before
            // it does anything, not halfway through (an org created, its owner's invitation not).
            Self::Email => {
                !s.chars().any(|c| c.is_control() || c.is_whitespace())
                    && s.split_once('@')
                        .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
            }
        }
    }

    /// The rule as a JSON Schema `pattern` (ECMA 262, anchored); `None` where `format` says it.
    pub fn pattern(self) -> Option<&'static str> {
        Some(match self {
            Self::Slug => "^[a-z0-9][a-z0-9-]*$",
            Self::Host => "^[A-Za-z0-9.-]+$",
            Self::Ident => "^[A-Za-z0-9._:+-]+$",
            Self::Token => "^[!-~]+$",
            Self::Base64Url => "^[A-Za-z0-9_-]+$",
            Self::Line => r"^[^\u0000-\u001f\u007f-\u009f]*$",
            Self::Text => r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$",
            Self::Email => return None,
        })
    }

    /// The JSON Schema `format` that states the rule, where no pattern does.
    pub fn format(self) -> Option<&'static str> {
        (self == Self::Email).then_some("email")
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Slug => "of a-z, 0-9 and '-', not starting with '-'",
            Self::Host => "of letters, digits, '.' and '-'",
            Self::Ident => "of letters, digits, '.', '_', ':', '+' and '-'",
            Self::Token => "of printable ASCII without spaces",
            Self::Base64Url => "of base64url (letters, digits, '_' and '-')",
            Self::Line => "without control characters",
            Self::Text => "without control characters other than tab and newline",
            Self::Email => "shaped local@domain.tld, without spaces or control characters",
        }
    }
}

/// A string's length (in characters) and characters, and the problem code that refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub min: usize,
    pub max: usize,
    pub chars: Chars,
    /// The problem `code` of a violation (422 in a body; 400 in a query, 404 for `project`).
    pub code: &'static str,
}

/// The code of a violation that has no more specific one.
pub const INVALID_FIELD: &str = "invalid_field";

const fn rule(min: usize, max: usize, chars: Chars, code: &'static str) -> Rule {
    Rule {
        min,
        max,
        chars,
        code,
    }
}

impl Rule {
    /// The one check of every string the API takes: `Err` says what is wrong in words (never
    /// echoing the value).
    pub fn check(&self, field: &str, value: &str) -> Result<(), String> {
        let len = value.chars().count();
        if (self.min..=self.max).contains(&len) && self.chars.allows(value) {
            return Ok(());
        }
        let length = if self.min == self.max {
            format!("{} characters", self.max)
        } else if self.min == 0 {
            format!("at most {} characters", self.max)
        } else {
            format!("{}-{} characters", self.min, self.max)
        };
        Err(format!(
            "`{field}` must be {length} {}",
            self.chars.describe()
        ))
    }
}

/// A string field of a request body: `name`, `list[]` (the items of an array), `list[].name`.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub path: &'static str,
    pub rule: Rule,
}

/// An array field of a request body and the most items it may have.
#[derive(Debug, Clone, Copy)]
pub struct Items {
    pub path: &'static str,
    pub max: usize,
    pub code: &'static str,
}

/// The limits of one request body type.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The component schema of the contract that describes the body.
    pub schema: &'static str,
    pub strings: &'static [Field],
    pub arrays: &'static [Items],
}

/// A request body type: the API's JSON extractor takes only these, so no body type can go
/// without limits.
pub trait Limited {
    const LIMITS: Limits;
}

const fn field(path: &'static str, rule: Rule) -> Field {
    Field { path, rule }
}

// Shared rules.
const EMAIL: Rule = rule(3, 254, Chars::Email, "invalid_email");
const PASSWORD: Rule = rule(12, 256, Chars::Line, "weak_password");
/// A password presented (login, accepting into an existing account): the policy's ceiling.
const PASSWORD_GIVEN: Rule = rule(1, 256, Chars::Line, INVALID_FIELD);
const SECRET: Rule = rule(1, 128, Chars::Token, INVALID_FIELD);
const ROLE: Rule = rule(1, 16, Chars::Ident, "invalid_role");

macro_rules! limited {
    ($ty:ident { $($path:literal: $rule:expr),* $(,)? } $(arrays { $($apath:literal: $max:expr, $code:literal),* $(,)? })?) => {
        impl Limited for $ty {
            const LIMITS: Limits = Limits {
                schema: stringify!($ty),
                strings: &[$(field($path, $rule)),*],
                arrays: &[$($(Items { path: $apath, max: $max, code: $code }),*)?],
            };
        }
    };
}

limited!(CreateInstanceRequest {
    "name": rule(1, 63, Chars::Slug, "invalid_name"),
    "sku": rule(1, 64, Chars::Ident, "unknown_sku"),
    "command": rule(1, 4096, Chars::Text, "invalid_command"),
});
limited!(DrainNodeRequest {});
limited!(RegisterNodeRequest {
    "name": rule(1, 63, Chars::Host, "invalid_node_name"),
    "agent_version": rule(1, 64, Chars::Ident, INVALID_FIELD),
    "discovery": rule(1, 32, Chars::Ident, INVALID_FIELD),
    "gpus[].uuid": rule(1, 128, Chars::Token, "invalid_gpus"),
    "gpus[].model": rule(1, 128, Chars::Line, "invalid_gpus"),
    "public_key": rule(1, 64, Chars::Base64Url, "invalid_public_key"),
    "encryption_key": rule(1, 64, Chars::Base64Url, "invalid_encryption_key"),
} arrays {
    "gpus": MAX_GPUS_PER_NODE, "invalid_gpus",
});
limited!(SignupRequest {
    "email": EMAIL,
    "password": PASSWORD,
    "org_name": rule(1, 63, Chars::Slug, "invalid_org_name"),
});
limited!(LoginRequest {
    // Any shape: one that is no address simply matches no account (401, like a wrong one).
    "email": rule(1, 254, Chars::Line, INVALID_FIELD),
    "password": PASSWORD_GIVEN,
});
limited!(RefreshRequest {
    "refresh_token": SECRET
});
limited!(AcceptInvitationRequest {
    "token": SECRET,
    "password": PASSWORD_GIVEN,
});
limited!(CreateOrgRequest {
    "name": rule(1, 63, Chars::Slug, "invalid_org_name"),
    "owner_email": EMAIL,
});
limited!(CreateProjectRequest {
    "name": rule(1, 63, Chars::Slug, "invalid_project_name")
});
limited!(SetRoleRequest { "role": ROLE });
limited!(CreateInvitationRequest {
    "email": EMAIL,
    "role": ROLE,
});
limited!(CreateServiceAccountRequest {
    "name": rule(1, 63, Chars::Slug, "invalid_service_account_name"),
    "role": ROLE,
});
limited!(CreateApiKeyRequest {
    "name": rule(1, 64, Chars::Line, "invalid_api_key_name"),
    "scopes[]": rule(1, 32, Chars::Ident, "invalid_scope"),
} arrays {
    "scopes": 32, "invalid_scope",
});
limited!(CreateJoinTokenRequest {});
limited!(SetPlanRequest {
    "plan": rule(1, 32, Chars::Ident, "unknown_plan")
});
limited!(SetQuotaRequest {});
// Billing.
const CHARGE_KEY: Rule = rule(1, 255, Chars::Token, "invalid_idempotency_key");
const METER: Rule = rule(1, 63, Chars::Ident, "invalid_meter");
/// `""` is a meter without SKUs.
const BILLING_SKU: Rule = rule(0, 100, Chars::Line, "invalid_sku");
limited!(SetSpendLimitRequest {});
limited!(SetBillingModeRequest {
    "mode": rule(1, 16, Chars::Ident, "invalid_billing_mode")
});
limited!(TopUpRequest {
    "idempotency_key": CHARGE_KEY
});
limited!(PayRequest {
    "idempotency_key": CHARGE_KEY
});
limited!(AddPaymentMethodRequest {
    "token": rule(1, 128, Chars::Ident, "invalid_payment_method"),
    "label": rule(1, 64, Chars::Line, "invalid_label"),
});
limited!(MeteringRunRequest {
    // `2026-12`, or `20261201T173000Z-20261201T174000Z`.
    "period": rule(1, 33, Chars::Ident, "invalid_period")
});
limited!(NewPriceBookVersion {
    "note": rule(0, 500, Chars::Line, "invalid_note"),
    "prices[].meter": METER,
    "prices[].sku": BILLING_SKU,
    "prices[].unit_price_minor": rule(1, 40, Chars::Ident, "invalid_price"),
    "prices[].unit_label": rule(1, 64, Chars::Line, "invalid_unit_label"),
    "prices[].currency": rule(3, 3, Chars::Ident, "invalid_currency"),
} arrays {
    "prices": MAX_PRICES, "invalid_price_book",
});
limited!(UsageEventBatch {
    "events[].id": rule(1, 200, Chars::Token, "invalid_event_id"),
    "events[].meter": METER,
    "events[].sku": BILLING_SKU,
    "events[].quantity": rule(1, 40, Chars::Ident, "invalid_quantity"),
} arrays {
    "events": MAX_USAGE_EVENTS, "invalid_batch",
});

/// The most events one `POST /v1/usage-events` batch may hold.
pub const MAX_USAGE_EVENTS: usize = 5000;
/// The most prices one price book version may hold.
pub const MAX_PRICES: usize = 1000;

/// The most GPUs one node may register (and so the most `GET /v1/nodes/{id}` lists).
pub const MAX_GPUS_PER_NODE: usize = 64;

/// Every request body type's limits (the contract test walks them).
pub const ALL: &[Limits] = &[
    CreateInstanceRequest::LIMITS,
    DrainNodeRequest::LIMITS,
    RegisterNodeRequest::LIMITS,
    SignupRequest::LIMITS,
    LoginRequest::LIMITS,
    RefreshRequest::LIMITS,
    AcceptInvitationRequest::LIMITS,
    CreateOrgRequest::LIMITS,
    CreateProjectRequest::LIMITS,
    SetRoleRequest::LIMITS,
    CreateInvitationRequest::LIMITS,
    CreateServiceAccountRequest::LIMITS,
    CreateApiKeyRequest::LIMITS,
    CreateJoinTokenRequest::LIMITS,
    SetPlanRequest::LIMITS,
    SetQuotaRequest::LIMITS,
    SetSpendLimitRequest::LIMITS,
    SetBillingModeRequest::LIMITS,
    TopUpRequest::LIMITS,
    PayRequest::LIMITS,
    AddPaymentMethodRequest::LIMITS,
    MeteringRunRequest::LIMITS,
    NewPriceBookVersion::LIMITS,
    UsageEventBatch::LIMITS,
];

/// The project a request names (`?project=`, an id or a name). Refused as
/// `404 project_not_found`: no project has such a name.
pub const PROJECT_QUERY: Rule = rule(1, 63, Chars::Ident, "project_not_found");

/// Query parameters by name, wherever they occur.
pub const QUERY: &[Field] = &[
    field("project", PROJECT_QUERY),
    field("org", rule(1, 36, Chars::Ident, "org_not_found")),
    field("cursor", rule(1, 64, Chars::Ident, "invalid_cursor")),
    field("limit", rule(1, 20, Chars::Ident, "invalid_limit")),
    field("action", rule(1, 64, Chars::Ident, "invalid_query")),
    field("actor", rule(1, 128, Chars::Ident, "invalid_query")),
    field("since", rule(1, 64, Chars::Line, "invalid_query")),
    field("until", rule(1, 64, Chars::Line, "invalid_query")),
    field("from", rule(1, 64, Chars::Line, "invalid_query")),
    field("to", rule(1, 64, Chars::Line, "invalid_query")),
];

/// Any other query parameter (names included): ignored by every handler, but still bounded.
pub const OTHER_QUERY: Rule = rule(0, 256, Chars::Line, "invalid_query");
