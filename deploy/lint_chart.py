"""Lints and renders the chart with Helm's Go SDK (helm-python-sdk) and validates what it renders
against the Kubernetes schemas. Called by deploy/lint."""
import subprocess
import sys
import tempfile

from helm_python import chart as helm

path, validate = sys.argv[1], sys.argv[2]
KUBE = "1.30.0"

# Value sets that must render, and ones the chart must refuse.
GOOD = {
    "defaults": {},
    "split on PostgreSQL": {
        "mode": "split", "persistence": {"enabled": False}, "autoscaling": {"enabled": True},
        "secrets": {"existingSecret": "cs", "refs": {"COUNTERSIGN_DATABASE_URL": {"name": "db", "key": "uri"}}},
        "serviceMonitor": {"enabled": True}, "agents": {"existingConfigMap": "cs-agents"},
        "policies": {"files": {"a.yaml": "rules: []\n"}},
        "config": {"publicUrl": "https://cs.example.com", "databaseMaxConnections": 20},
        "extraEnvFrom": [{"secretRef": {"name": "whsec"}}],
    },
    "all, three replicas": {"replicaCount": 3, "persistence": {"enabled": False}},
}
BAD = {
    "SQLite with two pods": {"replicaCount": 2},
    "SQLite split": {"mode": "split"},
    "unknown mode": {"mode": "both", "persistence": {"enabled": False}},
}

report = helm.lint(path, strict=True, kube_version="v" + KUBE)
errors = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
if errors:
    sys.exit(f"helm lint: {errors}")
chart = helm.Chart.load(path)
for name, values in GOOD.items():
    rendered = chart.render(values, name="rel", namespace="ns", is_install=True)
    docs = [text for source, text in sorted(rendered.items())
            if not source.endswith("NOTES.txt") and "servicemonitor" not in source and text.strip()]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as out:
        out.write("\n---\n".join(docs))
        out.flush()
        subprocess.run([validate, "-k", KUBE, "--strict", "--quiet", out.name], check=True)
    print(f"  renders and validates: {name}")
for name, values in BAD.items():
    try:
        chart.render(values, name="rel", namespace="ns", is_install=True)
    except Exception as refused:  # HelmRenderError
        print(f"  refused as it should be: {name}: {str(refused).splitlines()[0][:100]}…")
    else:
        sys.exit(f"the chart rendered {name!r}, which it must refuse")
