#!/usr/bin/env bash
# Installs the real servers and tools the tests run against: Debian's mosquitto and promtool, the npm
# node-opcua server and R's forecast package.
# Idempotent and quiet when everything is present. Missing tools are reported; tests then skip, or fail
# when CI is set.
set -uo pipefail
cd "$(dirname "$0")/.."

if ! command -v mosquitto >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing mosquitto (Debian package)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null) \
      || echo "warning: could not install mosquitto" >&2
  else
    echo "warning: mosquitto missing and not root: MQTT interop tests will skip (fail under CI)" >&2
  fi
fi

srv=collectors/opcua/testdata/nodeserver
if [ -f "$srv/package-lock.json" ] && [ ! -d "$srv/node_modules/node-opcua" ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "installing node-opcua test server (npm ci)"
    (cd "$srv" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) || echo "warning: npm ci failed in $srv" >&2
  else
    echo "warning: npm missing: node-opcua tests will skip (fail under CI)" >&2
  fi
fi

# The Standard Webhooks reference library, which verifies the hub's webhook signatures in hub/act tests.
wh=hub/act/testdata/standardwebhooks
if [ -f "$wh/package-lock.json" ] && [ ! -d "$wh/node_modules/standardwebhooks" ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "installing the Standard Webhooks reference library (npm ci)"
    (cd "$wh" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) || echo "warning: npm ci failed in $wh" >&2
  fi
fi

# promtool (Debian's prometheus package): the agent's health test runs the alert rules of
# docs/operations.md against its real /metrics with `promtool test rules`.
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing promtool (Debian package prometheus)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) \
      || echo "warning: could not install prometheus" >&2
  else
    echo "warning: promtool missing and not root: the alert rule test will skip (fail under CI)" >&2
  fi
fi

# Chromium (Debian's package): hub/console's browser tests drive it with chromedp.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium (Debian package)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium" >&2
  else
    echo "warning: chromium missing and not root: the console's browser tests will skip (fail under CI)" >&2
  fi
fi

# R and its forecast package: hub/learn/forecast compares its fits with R's (testdata/reference.R).
if ! Rscript -e 'quit(status = !requireNamespace("forecast", quietly = TRUE))' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing R and r-cran-forecast (Debian packages)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      r-base-core r-cran-forecast >/dev/null) || echo "warning: could not install R" >&2
  else
    echo "warning: R's forecast package missing and not root: the R reference test will skip (fail under CI)" >&2
  fi
fi
exit 0
