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
# Debian packages some tests need, installed where this runs as root with apt-get; without them
# those tests skip. debian_packages "COMMANDS" "PACKAGES" "WHAT FOR" "WHAT SKIPS"
debian_packages() {
  local cmd
  for cmd in $1; do command -v "$cmd" >/dev/null 2>&1 || break; cmd=; done
  [ -z "$cmd" ] && return 0  # every command is there
  command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] || return 0
  echo "installing $2 (Debian packages) $3"
  # shellcheck disable=SC2086 - $2 is a list of package names
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $2 >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $2 >/dev/null 2>&1; } ||
    echo "could not install $2; $4 will skip" >&2
}
# docker-compose (1.29, no engine needed) validates docker-compose.yml in the tests.
debian_packages docker-compose docker-compose "to validate docker-compose.yml" "the compose test"
# promtool (Debian's prometheus package) checks docker/prometheus and the dashboard's queries.
debian_packages promtool prometheus "to check the monitoring config" "its checks"
# wrk (a C HTTP load generator) runs the load script's --wrk phase in its smoke test.
debian_packages wrk wrk "for the load script's --wrk phase" "the load script's wrk check"
# slurm-wlm (slurmctld, slurmd, sbatch) and munge run the slurm launcher's tests (issue #25): each
# test starts its own controller and two node daemons on free ports (tests/service/slurmkit.py);
# nothing here starts a cluster.
debian_packages "slurmctld munged" "slurm-wlm munge" "for the slurm launcher's tests" \
  "the slurm launcher's tests"
# chromium and chromium-driver drive the dashboard in a real browser (tests/dashboard).
debian_packages "chromium chromedriver" "chromium chromium-driver" "for the dashboard tests" \
  "the dashboard tests"
for _ in $(seq 1 50); do
  if up 5432 && up 6379 && up "$MOTO_PORT"; then exit 0; fi
  sleep 0.2
done
up 5432 || echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2
up 6379 || echo "Redis is not reachable on 127.0.0.1:6379" >&2
up "$MOTO_PORT" || echo "moto is not reachable on 127.0.0.1:$MOTO_PORT (see .cache/moto.log)" >&2
exit 1
