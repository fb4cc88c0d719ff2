"""nginx as the benchmarks' baseline: one static server on loopback, set up alike everywhere.

`NGINX_CONF.format(prefix=DIR, port=PORT, root=DIR)` is a whole nginx.conf: one worker, no
access log, sendfile, keep-alive without a request limit, every temporary path under `prefix`.
"""

NGINX_CONF = """
user root;
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""
