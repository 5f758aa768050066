#!/usr/bin/env bash
# Install Debian's chromium for the web overview test (driven by the playwright package,
# which cannot download its own browser here). Best effort, like ensure-promtool.sh:
# without root or apt that test is skipped with a visible reason instead.
set -u
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium (Debian package) for the web overview test"
  (apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; }) \
    || echo "chromium could not be installed; the web overview test will be skipped"
else
  echo "chromium not installed and no root/apt: the web overview test will be skipped"
fi
exit 0
