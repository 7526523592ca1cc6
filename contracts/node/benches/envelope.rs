//! What the node envelope (ADR 0010) costs one call to a node, on one core.
//!
//! `cargo bench -p contract-node --bench envelope [-- --calls N --rounds R]` (`scripts/bench
//! envelope`). Each round times, over `--calls` calls of a realistic `WorkloadSpec`:
//! 1. baseline: what a call cost before, the command's JSON serialised and parsed (the
//!    payload converter's work on both sides);
//! 2. the envelope's full path: the control plane seals and signs, the node checks and opens,
//!    the node signs its reply (`WorkloadStatus::Running`), the workflow checks it;
//! 3. the baseline again (drift).
//!
//! Prints µs per call and the envelope's cost over the baseline; exits non-zero if an opened
//! command or a checked reply differs from what was sent (the work is real, not elided).

use contract_node::envelope::{encryption_public_key, new_encryption_secret};
use contract_node::{NodeCall, SealedCommand, SignedReport, WorkloadSpec, WorkloadStatus};
use ring::signature::{Ed25519KeyPair, KeyPair};
use shared_ids::{InstanceId, NodeId};
use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pair() -> Ed25519KeyPair {
    let der = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    Ed25519KeyPair::from_pkcs8(der.as_ref()).unwrap()
}

fn main() -> ExitCode {
    let calls = arg("--calls", 20_000);
    let rounds = arg("--rounds", 3);
    let node = NodeId::new();
    let node_secret = new_encryption_secret();
    let node_public = encryption_public_key(&node_secret);
    let node_pair = pair();
    let node_key = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        node_pair.public_key().as_ref(),
    );
    let control_plane = pair();
    let control_public = control_plane.public_key().as_ref().to_vec();
    let reply_key = encryption_public_key(&new_encryption_secret());
    let spec = WorkloadSpec {
        instance_id: InstanceId::new(),
        command: "python train.py --data /data/shard-0007 --epochs 30 --lr 3e-4 --batch 512".into(),
        gpu_indices: vec![0, 1, 2, 3, 4, 5, 6, 7],
        gpu_uuids: (0..8)
            .map(|i| format!("GPU-5f0b2a1c-9e3d-4c7a-8b6f-00000000000{i}"))
            .collect(),
    };
    let reply = WorkloadStatus::Running { pid: 4242 };

    let baseline = || {
        let start = Instant::now();
        for _ in 0..calls {
            let json = serde_json::to_vec(black_box(&spec)).unwrap();
            let back: WorkloadSpec = serde_json::from_slice(&json).unwrap();
            black_box(back);
        }
        start.elapsed().as_secs_f64() * 1e6 / calls as f64
    };
    let mut failed = false;
    let mut envelope = || {
        let start = Instant::now();
        for _ in 0..calls {
            let command = SealedCommand::seal(
                node,
                &node_public,
                black_box(&spec),
                ("cp", &reply_key),
                |m| control_plane.sign(m).as_ref().to_vec(),
            )
            .unwrap();
            let call = NodeCall {
                command,
                node_key: node_key.clone(),
            };
            let opened: WorkloadSpec = call
                .command
                .open(node, &node_secret, |_| Some(control_public.clone()))
                .unwrap();
            let report = SignedReport::sign(&call.command, &reply, |m| {
                node_pair.sign(m).as_ref().to_vec()
            });
            let checked = call.open::<WorkloadSpec>(&report).unwrap();
            failed |= opened != spec || checked != reply;
        }
        start.elapsed().as_secs_f64() * 1e6 / calls as f64
    };
    println!("node envelope, {calls} calls per phase, {rounds} rounds (µs per call)");
    println!("round  baseline  envelope  baseline-again  envelope-over-baseline");
    let mut overs = Vec::new();
    for round in 1..=rounds {
        let before = baseline();
        let sealed = envelope();
        let after = baseline();
        let base = (before + after) / 2.0;
        overs.push(sealed - base);
        println!(
            "{round:>5}  {before:>8.2}  {sealed:>8.2}  {after:>14.2}  {:>22.2}",
            sealed - base
        );
    }
    overs.sort_by(f64::total_cmp);
    println!(
        "median cost of the envelope per node call: {:.1} µs",
        overs[overs.len() / 2]
    );
    if failed {
        eprintln!("an opened command or a checked reply differed from what was sent");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
