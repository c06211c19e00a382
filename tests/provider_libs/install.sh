#!/bin/sh
# Installs the providers' own signing libraries that tests/providers_libs.rs
# drives: Standard Webhooks and Slack's SDK (Python, in a venv) and Stripe's
# Node library. Usage: tests/provider_libs/install.sh DIR (tests look in
# <cargo target dir>/provider-libs, or $HOOKD_PROVIDER_LIBS).
set -eu
dir=${1:?usage: install.sh DIR}
mkdir -p "$dir"
python3 -m venv "$dir/venv"
"$dir/venv/bin/pip" install --quiet --disable-pip-version-check \
    standardwebhooks==1.1.0 slack_sdk==3.48.0
npm install --silent --no-audit --no-fund --prefix "$dir/node" stripe@23.1.0
echo "provider libraries installed in $dir"
