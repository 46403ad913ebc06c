//! The self-hosted registry the reference documents describe — CNCF distribution behind nginx
//! with TLS and htpasswd — as files: `publish init --self-hosted DIR` writes them, and the test
//! harness runs the same nginx configuration (tests/it/support). Sized for ML images: no body
//! limit (`client_max_body_size 0`; the reference's `1000m` breaks every layer over 1 GB),
//! request bodies streamed, and timeouts long enough for a 10 GB layer on a slow uplink.

use std::path::Path;

/// distribution's configuration: storage under `dir/data`, htpasswd auth, on loopback only
/// (nginx is the only way in).
pub fn distribution_config(dir: &Path, backend_port: u16) -> String {
    let d = dir.display();
    format!(
        "# CNCF distribution, behind nginx (written by publish init --self-hosted).
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {d}/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{backend_port}
  headers:
    X-Content-Type-Options: [nosniff]
auth:
  htpasswd:
    realm: registry
    path: {d}/htpasswd
"
    )
}

/// nginx in front of distribution: TLS, the Host kept, bodies of any size streamed through,
/// 15-minute timeouts (a 10 GB layer at 100 Mbit/s takes about that long); temporary files
/// under `dir/nginx`. Runs as `nginx -c DIR/nginx/nginx.conf -p DIR/nginx`.
pub fn nginx_conf(dir: &Path, listen: &str, backend_port: u16, cert: &Path, key: &Path) -> String {
    let d = dir.display();
    format!(
        r#"# nginx in front of the registry (written by publish init --self-hosted).
worker_processes 1;
daemon off;
pid {d}/nginx/nginx.pid;
error_log {d}/nginx/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/nginx/body;
    proxy_temp_path {d}/nginx/proxy;
    fastcgi_temp_path {d}/nginx/fastcgi;
    uwsgi_temp_path {d}/nginx/uwsgi;
    scgi_temp_path {d}/nginx/scgi;
    server {{
        listen {listen} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            # Layers of ML images are many GB: no body limit (1000m breaks every layer over 1 GB).
            client_max_body_size 0;
            proxy_request_buffering off;
            proxy_buffering off;
            chunked_transfer_encoding on;
            proxy_http_version 1.1;
            proxy_pass http://127.0.0.1:{backend_port};
            proxy_set_header Host $http_host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_read_timeout 900;
            proxy_send_timeout 900;
            client_body_timeout 900;
            send_timeout 900;
        }}
    }}
}}
"#,
        cert = cert.display(),
        key = key.display()
    )
}

/// `setup.sh`: a private CA and a server certificate for `host` (openssl), and the htpasswd
/// user from `REGISTRY_USER` / `REGISTRY_PASSWORD` (bcrypt, as distribution requires).
pub fn setup_script(host: &str) -> String {
    let san = if host.parse::<std::net::IpAddr>().is_ok() { format!("IP:{host}") } else { format!("DNS:{host}") };
    format!(
        r#"#!/usr/bin/env bash
# Certificates and the first user for the registry (written by publish init --self-hosted).
# Idempotent: keeps what exists. Needs openssl and htpasswd (Debian: apache2-utils).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p tls nginx data
if [ ! -f tls/ca.pem ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls/ca.key -out tls/ca.pem \
    -days 3650 -subj "/CN=registry CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi
if [ ! -f tls/server.pem ]; then
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls/server.key -out tls/server.csr \
    -subj "/CN={host}" 2>/dev/null
  printf 'subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >tls/server.ext
  openssl x509 -req -in tls/server.csr -CA tls/ca.pem -CAkey tls/ca.key -CAcreateserial -out tls/server.pem \
    -days 825 -extfile tls/server.ext 2>/dev/null
fi
: "${{REGISTRY_USER:?set REGISTRY_USER and REGISTRY_PASSWORD for the first user}}"
: "${{REGISTRY_PASSWORD:?set REGISTRY_PASSWORD}}"
touch htpasswd
# The password goes through stdin, never the command line.
printf '%s\n' "$REGISTRY_PASSWORD" | htpasswd -Bi htpasswd "$REGISTRY_USER" 2>/dev/null
echo "clients trust $(pwd)/tls/ca.pem (publish: ca_file; Docker: /etc/docker/certs.d/{host}/ca.crt)"
"#
    )
}

/// `run.sh`: distribution and nginx in the foreground; stopping it stops both.
pub fn run_script() -> String {
    r#"#!/usr/bin/env bash
# Runs the registry and nginx in the foreground (written by publish init --self-hosted).
set -euo pipefail
cd "$(dirname "$0")"
registry=$(command -v docker-registry || command -v registry)
"$registry" serve registry.yml &
backend=$!
trap 'kill "$backend" 2>/dev/null || true' EXIT
nginx -c "$(pwd)/nginx/nginx.conf" -p "$(pwd)/nginx"
"#
    .to_string()
}

/// Frees the disk of the images `publish prune` deleted: distribution's garbage collection
/// (deletes only mark manifests gone). Arguments go to `garbage-collect` (`--dry-run`).
pub fn gc_script() -> String {
    r#"#!/usr/bin/env bash
# Frees the disk of deleted images (written by publish init --self-hosted): distribution's
# garbage collection. Stop run.sh first, or keep pushes away: a blob uploaded while it runs can
# be collected. ./gc.sh --dry-run shows what would go.
set -euo pipefail
cd "$(dirname "$0")"
registry=$(command -v docker-registry || command -v registry)
exec "$registry" garbage-collect "$@" registry.yml
"#
    .to_string()
}
