#!/usr/bin/env bash
# Start whichever of the test services is down: PostgreSQL, Redis, a moto S3 server.
set -u
VENV=${VENV:-.venv}
MOTO_PORT=${SAGAN_TEST_MOTO_PORT:-5055}

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! up 5432; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if ! up 6379; then
  echo "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
fi
if ! up "$MOTO_PORT"; then
  echo "starting moto S3 server on :$MOTO_PORT"
  mkdir -p .cache
  nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >.cache/moto.log 2>&1 &
fi
# docker-compose (1.29, no engine needed) validates docker-compose.yml in the tests.
if ! command -v docker-compose >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing docker-compose (Debian package) to validate docker-compose.yml"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null 2>&1; } ||
    echo "could not install docker-compose; the compose test will skip" >&2
fi
# promtool (Debian's prometheus package) checks docker/prometheus and the dashboard's queries.
if ! command -v promtool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing promtool (Debian package prometheus) to check the monitoring config"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null 2>&1; } ||
    echo "could not install promtool; its checks will skip" >&2
fi
# Debian's wrk (a C HTTP load generator) runs the load script's --wrk phase in its smoke test.
if ! command -v wrk >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing wrk (Debian package) for the load script's --wrk phase"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1; } ||
    echo "could not install wrk; the load script's wrk check will skip" >&2
fi
# Debian's slurm-wlm (slurmctld, slurmd, sbatch) and munge run the slurm launcher's tests (issue
# #25): each test starts its own controller and two node daemons on free ports (tests/service/
# slurmkit.py); nothing here starts a cluster.
if ! { command -v slurmctld >/dev/null 2>&1 && command -v munged >/dev/null 2>&1; } &&
  command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing slurm-wlm and munge (Debian packages) for the slurm launcher's tests"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1; } ||
    echo "could not install slurm-wlm; the slurm launcher's tests will skip" >&2
fi
# Debian's chromium and chromium-driver drive the dashboard in a real browser (tests/dashboard).
if ! { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } &&
  command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing chromium and chromium-driver (Debian packages) for the dashboard tests"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; } ||
    echo "could not install chromium; the dashboard tests will skip" >&2
fi
for _ in $(seq 1 50); do
  if up 5432 && up 6379 && up "$MOTO_PORT"; then exit 0; fi
  sleep 0.2
done
up 5432 || echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2
up 6379 || echo "Redis is not reachable on 127.0.0.1:6379" >&2
up "$MOTO_PORT" || echo "moto is not reachable on 127.0.0.1:$MOTO_PORT (see .cache/moto.log)" >&2
exit 1
