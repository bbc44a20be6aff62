#!/usr/bin/env bash
# A stand-in "outside service" for the quickstart: a TLS server on 127.0.0.1:18443 with a
# throwaway self-signed certificate for api.allowed.test, *.wild.allowed.test and api.partner.test.
# Writes examples/.upstream/ (ignored by git) and runs in the foreground; Ctrl-C stops it.
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/.upstream"
mkdir -p "$dir"
if [ ! -f "$dir/cert.pem" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -keyout "$dir/key.pem" -out "$dir/cert.pem" -subj /CN=api.allowed.test \
        -addext "subjectAltName=DNS:api.allowed.test,DNS:*.wild.allowed.test,DNS:evil.test,DNS:api.partner.test" 2>/dev/null
fi
echo "upstream: https://api.allowed.test:18443 (CA: $dir/cert.pem)"
exec openssl s_server -accept 127.0.0.1:18443 -cert "$dir/cert.pem" -key "$dir/key.pem" -www -quiet
