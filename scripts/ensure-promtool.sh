#!/usr/bin/env bash
# Install promtool (Debian's prometheus package) for the alert-rule and Prometheus-config
# tests. Best effort, like ensure-kcat.sh: without root or apt those tests are skipped with
# a visible reason instead.
set -u
command -v promtool >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing promtool (Debian package prometheus)"
  (apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; }) \
    || echo "promtool could not be installed; its tests will be skipped"
else
  echo "promtool not installed and no root/apt: its tests will be skipped"
fi
exit 0
