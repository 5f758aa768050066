#!/usr/bin/env bash
# Install kcat for the outsider-readability test. Best effort: without root or apt the
# test that needs it is skipped with a visible reason instead.
set -u
command -v kcat >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing kcat (Debian package)"
  (apt-get install -y -qq kcat >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq kcat >/dev/null 2>&1; }) \
    || echo "kcat could not be installed; its test will be skipped"
else
  echo "kcat not installed and no root/apt: its test will be skipped"
fi
exit 0
