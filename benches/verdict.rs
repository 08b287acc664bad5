//! Verdict evaluation: the shipped policy set, and a set of 200 rules.
//!
//!   cargo bench --bench verdict
//!
//! Criterion runs on one thread, so time per verdict converts directly to verdicts/s on one core.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use countersign::domain::request::{ProposalRequest, ValidRequest};
use countersign::policy::Facts;
use countersign::registry::Registry;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// The allocator the server binary uses (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn request(body: serde_json::Value) -> ValidRequest {
    ProposalRequest::from_json(body)
        .unwrap()
        .validate()
        .unwrap()
}

fn discount() -> ValidRequest {
    request(serde_json::json!({
        "action": "crm.opportunity.update",
        "summary": "Apply 15% discount to Acme renewal",
        "target": {"system": "salesforce", "type": "Opportunity", "id": "006Acme0001", "url": "https://acme.my.salesforce.com/006Acme0001"},
        "changes": [{"path": "discount_percent", "before": 5, "after": 15}, {"path": "amount", "before": 45000, "after": 40500}],
        "params": {"discount_percent": 15, "amount": 40500, "currency": "USD"},
        "evidence": [{"label": "Call transcript", "url": "https://gong.example/call/42", "excerpt": "If you can do 15% we sign today."}],
        "data_classes": ["financial"],
        "requested_by": "jane@acme-sales.example"
    }))
}

/// The shipped policies plus 200 generated rules in the style of the shipped ones.
fn two_hundred_rules(dir: &Path) -> PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    for entry in std::fs::read_dir(root().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, policies.join(path.file_name().unwrap())).unwrap();
        }
    }
    let mut text = String::from("rules:\n");
    for i in 0..200 {
        let when = match i % 4 {
            0 => format!(
                "action.id == \"crm.generated.{i}\" && has(proposal.params.amount) && double(proposal.params.amount) > {i}.0"
            ),
            1 => format!(
                "\"pii\" in proposal.data_classes && proposal.target.system == \"system-{i}\""
            ),
            2 => format!(
                "size(proposal.changes) > {} && action.impact == \"high\"",
                100 + i
            ),
            _ => format!("proposal.changes.exists(c, c.path == \"field_{i}\")"),
        };
        text.push_str(&format!(
            "  - name: generated-{i}\n    when: '{}'\n    route: [revops]\n    sla: {}m\n",
            when.replace('\'', "''"),
            30 + i
        ));
    }
    std::fs::write(policies.join("generated.yaml"), text).unwrap();
    policies
}

fn bench(c: &mut Criterion) {
    let manifests = root().join("manifests");
    let shipped = Registry::load(&manifests, &root().join("policies")).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let large = Registry::load(&manifests, &two_hundred_rules(scratch.path())).unwrap();
    assert_eq!(
        large.policies.rules().len(),
        shipped.policies.rules().len() + 200
    );

    let agent = shipped
        .agents
        .agents()
        .iter()
        .find(|a| a.id.as_str() == "revops-crm")
        .unwrap()
        .clone();
    let request = discount();
    let entry = agent.admit(&request.action).unwrap();
    let now = chrono::Utc::now();
    let facts = Facts {
        agent: &agent,
        action: &request.action,
        entry,
        request: &request,
        now,
        budget: None,
    };

    let only_defaults = scratch.path().join("only-defaults");
    std::fs::create_dir_all(&only_defaults).unwrap();
    std::fs::copy(
        root().join("policies/defaults.yaml"),
        only_defaults.join("defaults.yaml"),
    )
    .unwrap();
    let empty = Registry::load(&manifests, &only_defaults).unwrap();

    let mut group = c.benchmark_group("verdict");
    group.bench_function("no rules (facts and defaults only)", |b| {
        b.iter(|| black_box(empty.policies.evaluate(black_box(&facts))))
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function(
        format!("shipped set ({} rules)", shipped.policies.rules().len()),
        |b| b.iter(|| black_box(shipped.policies.evaluate(black_box(&facts)))),
    );
    group.bench_function(format!("{} rules", large.policies.rules().len()), |b| {
        b.iter(|| black_box(large.policies.evaluate(black_box(&facts))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
