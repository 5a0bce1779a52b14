"""The execution, persistence and triggers jobs on Apache Flink, through PyFlink.

Three pieces, split by which Python runs them:

- `provision` (project venv): the PyFlink runtime, fetched once and cached:
  a virtualenv of its own (infra/flink/target/venv, from
  infra/flink/requirements.txt: apache-flink pins apache-beam 2.48 and with it
  old numpy/pyarrow/pandas/protobuf, so it never shares the project's venv)
  and the Kafka connector jars (infra/flink/pom.xml -> infra/flink/target/lib).
- `service` (project venv): `mocktrade job NAME --engine flink`. The process
  the launcher and operators see: health endpoint, and (persistence) the
  owner of the chDB analytics directory, served over HTTP to the query
  service and to the Flink job. It runs the job file on a local Flink
  mini-cluster and starts it again, from its last retained checkpoint, when
  the Flink process dies.
- `job` and `operators` (PyFlink venv): the job file itself. Kafka sources
  (group offsets, committed first, else earliest), keyed by userId, operators
  that call the shared ExecutionHandler / PersistenceHandler; for triggers,
  market_data and order_updates connected and keyed by symbol, the resting
  orders in keyed state, matched by the shared TriggerBook. The same file
  runs unchanged under `flink run -py` on a Flink cluster.
"""
