//! The node activities, run twice, are harmless; workloads are real processes.

use contract_node::envelope::{AwaitRunning, ListWorkloads, StopWorkload};
use contract_node::{
    NodeCall, NodeCommand, SealedCommand, SessionInput, SignedReport, WorkloadReport, WorkloadSpec,
    WorkloadStatus,
};
use node_agent::activities::NodeAgentActivities;
use node_agent::workload::ProcessRuntime;
use shared_ids::InstanceId;
use shared_ids::NodeId;
use std::sync::Arc;
use std::time::Duration;
use temporalio_sdk::activities::ActivityError;
use temporalio_sdk::testing::{ActivityEnvironment, ActivityEnvironmentError};

fn runtime(dir: &std::path::Path) -> Arc<ProcessRuntime> {
    Arc::new(
        ProcessRuntime::new(dir, Duration::from_millis(200), Duration::from_millis(500)).unwrap(),
    )
}

fn env(rt: Arc<ProcessRuntime>) -> SealedEnvironment {
    env_with_faults(rt, std::path::PathBuf::from("/nonexistent/gpu-faults"))
}

/// The agent's activities as the control plane calls them: every command sealed for this node
/// and signed by a control-plane key the agent trusts, every reply checked.
pub(crate) struct SealedEnvironment {
    env: ActivityEnvironment,
    pub node: NodeId,
    node_key: String,
    encryption_key: [u8; 32],
    control_plane: ring::signature::Ed25519KeyPair,
    /// The control plane's reply key: what workload output in replies is sealed for.
    pub reply_secret: [u8; 32],
    reply_public: [u8; 32],
    _keys: tempfile::TempDir,
}

impl SealedEnvironment {
    /// Runs `activity` with `command` sealed and signed like the control plane does.
    pub(crate) async fn run<C, AD>(
        &self,
        activity: AD,
        command: C,
    ) -> Result<C::Reply, ActivityEnvironmentError>
    where
        C: NodeCommand,
        AD: temporalio_common::ActivityDefinition<Input = SealedCommand, Output = SignedReport>
            + temporalio_sdk::activities::ExecutableActivity,
    {
        let sealed = self.seal(&command, |m| self.control_plane.sign(m).as_ref().to_vec());
        self.run_sealed::<C, AD>(activity, sealed).await
    }

    pub(crate) fn seal<C: NodeCommand>(
        &self,
        command: &C,
        sign: impl FnOnce(&[u8]) -> Vec<u8>,
    ) -> SealedCommand {
        SealedCommand::seal(
            self.node,
            &self.encryption_key,
            command,
            ("cp", &self.reply_public),
            sign,
        )
        .unwrap()
    }

    pub(crate) async fn run_sealed<C, AD>(
        &self,
        activity: AD,
        sealed: SealedCommand,
    ) -> Result<C::Reply, ActivityEnvironmentError>
    where
        C: NodeCommand,
        AD: temporalio_common::ActivityDefinition<Input = SealedCommand, Output = SignedReport>
            + temporalio_sdk::activities::ExecutableActivity,
    {
        let call = NodeCall {
            command: sealed.clone(),
            node_key: self.node_key.clone(),
        };
        let report = self.env.run(activity, sealed).await?;
        Ok(call
            .open::<C>(&report)
            .expect("the agent signs its replies"))
    }
}

/// An environment whose 4 simulated GPUs read their faults from `fault_file`.
fn env_with_faults(rt: Arc<ProcessRuntime>, fault_file: std::path::PathBuf) -> SealedEnvironment {
    use ring::signature::KeyPair;
    let health = Arc::from(node_agent::gpu::health_probe("simulated", fault_file));
    let keys = tempfile::tempdir().unwrap();
    let identity = node_agent::identity::Identity::load_or_create(keys.path()).unwrap();
    let node = NodeId::new();
    let node_key = identity.public_key();
    let encryption_key: [u8; 32] = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        identity.encryption_key(),
    )
    .unwrap()
    .try_into()
    .unwrap();
    let der =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let control_plane = ring::signature::Ed25519KeyPair::from_pkcs8(der.as_ref()).unwrap();
    let trusted = std::collections::HashMap::from([(
        "cp".to_string(),
        control_plane.public_key().as_ref().to_vec(),
    )]);
    let env = ActivityEnvironment::builder()
        .register_activities(NodeAgentActivities::new(
            node_agent::activities::Keys {
                node_id: node,
                identity: Arc::new(identity),
                control_plane: Arc::new(node_agent::trust::ControlPlaneKeys::pinned(trusted)),
            },
            rt,
            health,
            vec![0, 1, 2, 3],
            Duration::from_millis(50),
            Default::default(),
        ))
        .build();
    let reply_secret = rand::random::<[u8; 32]>();
    SealedEnvironment {
        env,
        node,
        node_key,
        encryption_key,
        control_plane,
        reply_secret,
        reply_public: contract_node::envelope::reply_key_public(reply_secret),
        _keys: keys,
    }
}

fn spec(command: &str) -> WorkloadSpec {
    WorkloadSpec {
        instance_id: InstanceId::new(),
        command: command.into(),
        gpu_indices: vec![1, 3],
        gpu_uuids: vec!["GPU-a".into(), "GPU-b".into()],
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next())
                != Some("Z")
        })
        .unwrap_or(false)
}

fn pid_of(status: &WorkloadStatus) -> i32 {
    match status {
        WorkloadStatus::Running { pid } => *pid,
        other => panic!("expected running, got {other:?}"),
    }
}

#[tokio::test]
async fn start_await_and_stop_run_twice_are_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let env = env(runtime(dir.path()));
    let spec = spec("sleep 600 & echo $! > child.pid; echo devices=$CUDA_VISIBLE_DEVICES; wait");
    let id = spec.instance_id;

    let pid = pid_of(
        &env.run(NodeAgentActivities::start_workload, spec.clone())
            .await
            .unwrap(),
    );
    assert_eq!(
        pid_of(
            &env.run(NodeAgentActivities::start_workload, spec.clone())
                .await
                .unwrap()
        ),
        pid,
        "one process, not two"
    );
    assert_eq!(
        pid_of(
            &env.run(
                NodeAgentActivities::await_workload_running,
                AwaitRunning(id)
            )
            .await
            .unwrap()
        ),
        pid
    );
    assert_eq!(
        pid_of(
            &env.run(
                NodeAgentActivities::await_workload_running,
                AwaitRunning(id)
            )
            .await
            .unwrap()
        ),
        pid
    );

    let work = dir.path().join("instances").join(id.to_string());
    let log = std::fs::read_to_string(work.join("output.log")).unwrap();
    assert!(
        log.contains("devices=1,3"),
        "only its GPUs are visible: {log}"
    );
    let home = dir.path().join("workloads").join(id.to_string());
    let child: i32 = std::fs::read_to_string(home.join("child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(child));

    let stopped = env
        .run(NodeAgentActivities::stop_workload, StopWorkload(id))
        .await
        .unwrap();
    assert!(
        matches!(stopped, WorkloadStatus::Exited { .. }),
        "{stopped:?}"
    );
    assert!(!alive(pid), "group leader stopped");
    // The whole process group goes, including children of the workload.
    for _ in 0..50 {
        if !alive(child) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(child), "the workload's children stopped too");
    assert!(matches!(
        env.run(NodeAgentActivities::stop_workload, StopWorkload(id))
            .await
            .unwrap(),
        WorkloadStatus::Exited { .. }
    ));
    // A late, retried start after the stop does not resurrect the workload.
    let late = env
        .run(NodeAgentActivities::start_workload, spec)
        .await
        .unwrap();
    assert!(matches!(late, WorkloadStatus::Exited { .. }), "{late:?}");
}

#[tokio::test]
async fn a_stop_that_overtakes_its_start_prevents_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let env = env(runtime(dir.path()));
    let spec = spec("sleep 600");
    assert_eq!(
        env.run(
            NodeAgentActivities::stop_workload,
            StopWorkload(spec.instance_id)
        )
        .await
        .unwrap(),
        WorkloadStatus::Unknown
    );
    let status = env
        .run(NodeAgentActivities::start_workload, spec)
        .await
        .unwrap();
    assert!(
        !matches!(status, WorkloadStatus::Running { .. }),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_workload_that_exits_during_settle_answers_its_exit_not_a_failure_message() {
    let dir = tempfile::tempdir().unwrap();
    let env = env(runtime(dir.path()));
    let spec = spec("echo failing-now >&2; exit 42");
    env.run(NodeAgentActivities::start_workload, spec.clone())
        .await
        .unwrap();
    // The exit and the output are the signed reply (shown to the instance's owner only); no
    // failure message, which Temporal shows to operators, carries workload output.
    match env
        .run(
            NodeAgentActivities::await_workload_running,
            AwaitRunning(spec.instance_id),
        )
        .await
    {
        Ok(WorkloadStatus::Exited {
            exit_code,
            log_tail,
            output,
        }) => {
            assert_eq!(exit_code, Some(42));
            // The output travels sealed for the control plane, for this instance only.
            assert!(
                log_tail.is_empty(),
                "plaintext output in the reply: {log_tail}"
            );
            let output = output.expect("the last output, sealed");
            assert!(
                !serde_json::to_string(&output)
                    .unwrap()
                    .contains("failing-now")
            );
            let context = spec.instance_id.to_string();
            let opened =
                contract_node::envelope::open_output(&output, env.reply_secret, &context).unwrap();
            assert!(opened.contains("failing-now"), "{opened}");
        }
        other => panic!("expected the exit, got {other:?}"),
    }
}

#[tokio::test]
async fn a_restarted_agent_re_adopts_running_workloads() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec("sleep 600");
    let pid = {
        let first = runtime(dir.path());
        pid_of(&first.start(&spec).await.unwrap())
        // The first runtime is dropped here: the agent "restarts"; its workload keeps running.
    };
    let gone = spec_with_dead_process(dir.path()).await;
    let second = runtime(dir.path());
    let adopted = second.adopt();
    assert!(
        adopted.contains(&(spec.instance_id, WorkloadStatus::Running { pid })),
        "{adopted:?}"
    );
    assert!(
        adopted
            .iter()
            .any(|(id, s)| *id == gone && matches!(s, WorkloadStatus::Exited { .. })),
        "vanished one reported"
    );
    // The new agent can still stop what the old one started.
    second.stop(spec.instance_id).await.unwrap();
    assert!(!alive(pid));
}

/// A workload whose process died while no agent watched it.
async fn spec_with_dead_process(dir: &std::path::Path) -> InstanceId {
    let rt = runtime(dir);
    let s = spec("sleep 600");
    let pid = pid_of(&rt.start(&s).await.unwrap());
    // SAFETY: killing the test's own workload process.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    while alive(pid) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.instance_id
}

#[tokio::test]
async fn a_workload_is_running_straight_through_its_shell_exec() {
    // No settle time: await_running checks while `sh` is still exec'ing the command, the moment
    // at which reading /proc/<pid>/environ can come back empty.
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(
        ProcessRuntime::new(dir.path(), Duration::ZERO, Duration::from_millis(500)).unwrap(),
    );
    let mut specs = Vec::new();
    for _ in 0..30 {
        let s = spec("sleep 600");
        rt.start(&s).await.unwrap();
        let status = rt.await_running(s.instance_id).await;
        assert!(
            matches!(status, Ok(WorkloadStatus::Running { .. })),
            "{status:?}"
        );
        specs.push(s);
    }
    for s in specs {
        rt.stop(s.instance_id).await.unwrap();
    }
}

#[tokio::test]
async fn a_workload_started_just_before_the_agent_died_is_found_by_its_own_pid_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec("sleep 600");
    let pid = pid_of(&runtime(dir.path()).start(&s).await.unwrap());
    // The agent died after spawning but before recording the identity.
    let work = dir.path().join("instances").join(s.instance_id.to_string());
    while !work.join("pid").exists() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    std::fs::remove_file(work.join("identity")).unwrap();
    let restarted = runtime(dir.path());
    assert_eq!(
        restarted.status_of(s.instance_id),
        WorkloadStatus::Running { pid }
    );
    restarted.stop(s.instance_id).await.unwrap();
    assert!(!alive(pid));
}

#[tokio::test]
async fn a_session_reports_at_once_when_gpu_health_changes_and_lists_workloads() {
    let dir = tempfile::tempdir().unwrap();
    let faults = dir.path().join("gpu-faults");
    let env = env_with_faults(runtime(dir.path()), faults.clone());
    let spec = spec("sleep 30");
    let started = env
        .run(NodeAgentActivities::start_workload, spec.clone())
        .await
        .unwrap();
    // Nothing changed: the session runs until its report is due.
    let quiet = SessionInput {
        report_every_s: 1,
        known_unhealthy: vec![],
        report_now: false,
    };
    let t = std::time::Instant::now();
    let report = env
        .run(NodeAgentActivities::session, quiet.clone())
        .await
        .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(900), "returned early");
    assert!(report.gpus.iter().all(|g| g.healthy));
    assert_eq!(
        report.workloads,
        vec![WorkloadReport {
            instance_id: spec.instance_id,
            running: true
        }]
    );
    // A GPU fails: the session returns within a probe interval, not at the report time.
    std::fs::write(&faults, "2 XID 79: fallen off the bus\n").unwrap();
    let slow = SessionInput {
        report_every_s: 60,
        ..quiet
    };
    let t = std::time::Instant::now();
    let report = env.run(NodeAgentActivities::session, slow).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    let bad: Vec<_> = report.gpus.iter().filter(|g| !g.healthy).collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].index, 2);
    assert!(bad[0].reason.as_deref().unwrap().contains("XID 79"));
    let listed = env
        .run(NodeAgentActivities::list_workloads, ListWorkloads)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    env.run(
        NodeAgentActivities::stop_workload,
        StopWorkload(spec.instance_id),
    )
    .await
    .unwrap();
    assert!(!alive(pid_of(&started)));
    let listed = env
        .run(NodeAgentActivities::list_workloads, ListWorkloads)
        .await
        .unwrap();
    assert!(
        listed.is_empty(),
        "a stopped workload is no longer reported"
    );
}

#[tokio::test]
async fn a_stop_cut_short_leaves_the_workload_reported_until_it_is_really_gone() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let spec = spec("sleep 30");
    let started = rt.start(&spec).await.unwrap();
    // The agent died right after marking the stop, before signalling the process.
    std::fs::write(
        dir.path()
            .join("instances")
            .join(spec.instance_id.to_string())
            .join("stopped"),
        "",
    )
    .unwrap();
    let known = rt.known();
    assert_eq!(known.len(), 1, "a live process is never hidden: {known:?}");
    assert!(matches!(known[0].1, WorkloadStatus::Running { .. }));
    // The retried stop finishes the job; then it is gone from the report.
    rt.stop(spec.instance_id).await.unwrap();
    assert!(!alive(pid_of(&started)));
    assert!(rt.known().is_empty());
}

/// The agent acts only on commands sealed for it and signed by the control plane: a command a
/// rogue host wrote (it can: the node's encryption key is public) is refused for good, and so
/// is one sealed for another node.
#[tokio::test]
async fn a_command_the_control_plane_did_not_sign_is_refused_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let env = env(runtime(dir.path()));
    let rogue = {
        let der = platform_iam::tokens::generate_pkcs8();
        ring::signature::Ed25519KeyPair::from_pkcs8(&der).unwrap()
    };
    let spec = spec("touch ran; sleep 600");
    let forged = env.seal(&spec, |m| rogue.sign(m).as_ref().to_vec());
    let refused = env
        .run_sealed::<WorkloadSpec, _>(NodeAgentActivities::start_workload, forged)
        .await;
    match refused {
        Err(ActivityEnvironmentError::Activity(ActivityError::Application(failure))) => {
            assert_eq!(
                failure.type_name(),
                Some(contract_node::vocabulary::NodeFailure::RefusedCommand.as_str())
            );
            assert!(failure.is_non_retryable());
        }
        other => panic!("expected RefusedCommand, got {other:?}"),
    }
    // Signed by the control plane, but for another node: refused as well.
    let other = env_with_faults(runtime(dir.path()), "/nonexistent".into());
    let elsewhere = other.seal(&spec, |m| rogue.sign(m).as_ref().to_vec());
    assert!(
        env.run_sealed::<WorkloadSpec, _>(NodeAgentActivities::start_workload, elsewhere)
            .await
            .is_err()
    );
    assert!(
        std::fs::read_dir(dir.path().join("instances"))
            .map(|d| d.count() == 0)
            .unwrap_or(true),
        "nothing was started"
    );
}
