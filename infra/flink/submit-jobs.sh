#!/usr/bin/env bash
# The one-shot `flink-jobs` service of docker-compose.yml (profile flink):
# submits the execution, persistence and triggers jobs, detached, to the
# session cluster, each the job file unchanged (README, "Jobs on Apache
# Flink"). A job of the same name already running is left alone, so running
# this again (a restarted stack) submits only what is missing. Each job
# starts from its group's committed offsets; to restore one from a retained
# checkpoint instead: flink run -s /flink-data/flink/JOB/checkpoints/<id>/chk-<n> ...
set -euo pipefail
FLINK=/opt/flink/bin/flink
MASTER=${FLINK_MASTER:-jobmanager:8081}

slots() {  # free task slots of the cluster (the image's Python; no curl needed)
  "$PYFLINK_PYTHON" - "$MASTER" <<'PY'
import json, sys, urllib.request
try:
    print(json.load(urllib.request.urlopen(f"http://{sys.argv[1]}/overview", timeout=3))["slots-available"])
except Exception:
    print(0)
PY
}
until (( $(slots) > 0 )); do
  echo "waiting for a TaskManager's slots at $MASTER"; sleep 2
done
running=$("$FLINK" list -r -m "$MASTER" 2>/dev/null || true)
for job in execution persistence triggers; do
  if grep -q "mocktrade-$job " <<<"$running"; then
    echo "mocktrade-$job is running already"
    continue
  fi
  "$FLINK" run -d -m "$MASTER" -pyclientexec "$PYFLINK_PYTHON" -pyexec "$PYFLINK_PYTHON" \
    -py /opt/mocktrade/src/mocktrade/jobs/flink/job.py -pyfs /opt/mocktrade/src "$job"
done
