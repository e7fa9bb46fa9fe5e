// nginx configurations for the bench (pure text). One process, no master (`master_process
// off`): one worker doing all the work, and one pid for us to kill and measure. The reverse
// proxy runs as as many such processes as the agent has proxies, each listening with
// `reuseport`, as the agent's do (docs/benchmarks.md).

export const PORTS = {
  /** server pod: HTTP/1.1, nginx returning 200 */
  http1: 8080,
  /** server pod: h2c with prior knowledge, plain GET and a fake unary gRPC method */
  h2: 8081,
  /** server pod: TCP, says "hi" and closes (server speaks first) */
  greet: 9090,
  /** server pod: iperf3 -s */
  iperf: 5201,
  /** server pods: nginx's stub_status (requests served), to measure a Service's spread */
  status: 8099,
  /** node namespace: nginx reverse proxy ports, each the server port + 10000 */
  proxyOffset: 10000,
  /** node namespace: nginx in front of the Service's pods (an upstream block of them), each the server port + 20000 */
  serviceOffset: 20000,
} as const;

/** The gRPC method the server answers: a unary call with an empty message. */
export const GRPC_PATH = '/bench.Bench/Unary';

const STREAM_MODULE = '/usr/lib/nginx/modules/ngx_stream_module.so';

export function common(dir: string): string {
  return `load_module ${STREAM_MODULE};
daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 19000; multi_accept on; }
`;
}

export function httpCommon(dir: string): string {
  return `  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  client_header_timeout 600s;
  http2_max_requests 100000000;
`;
}

/**
 * The upstream servers, in the server pod. `grpcReply` is a file holding a gRPC message
 * frame (5 bytes: uncompressed, length 0): nginx answers the unary call with it,
 * `content-type: application/grpc` and a `grpc-status: 0` trailer, at nginx speed, so the
 * server is never the bottleneck (a grpc-js server would be).
 */
export function serverConf(dir: string, grpcReply: string): string {
  return `${common(dir)}http {
${httpCommon(dir)}  server { listen ${PORTS.http1} reuseport backlog=4096; location / { return 200 "ok\\n"; } }
  server {
    listen ${PORTS.h2} http2 backlog=4096;
    location / { return 200 "ok\\n"; }
    location = ${GRPC_PATH} {
      default_type application/grpc;
      add_trailer grpc-status 0;
      alias ${grpcReply};
      error_page 405 =200 $uri;
    }
  }
  server { listen ${PORTS.status}; location = /status { stub_status; } }
}
stream { server { listen ${PORTS.greet} backlog=4096; return "hi\\n"; } }
`;
}

/** The keep-alive pool of the HTTP/1 reverse proxy's upstream `name` (one server at `addr`). */
export const h1Upstream = (name: string, addr: string) => `upstream ${name} { server ${addr}; keepalive 128; keepalive_requests 100000000; }`;
/** HTTP/1.1 keep-alive to upstream `up` (nginx's default is HTTP/1.0 and a close per request). */
export const h1 = (up: string) => `proxy_pass http://${up}; proxy_http_version 1.1; proxy_set_header Connection "";`;

/**
 * The reverse proxy in the node namespace: what a node proxy written in C does with one
 * worker. HTTP/1 and h2c in front, keep-alive HTTP/1.1 upstream (nginx cannot proxy h2
 * to an upstream except gRPC); gRPC over grpc_pass with keep-alive; TCP via the stream module.
 */
export function proxyConf(dir: string, listenIp: string, serverIp: string, serviceIps: string[]): string {
  const p = (port: number) => `${port + PORTS.proxyOffset} reuseport`;
  const s = (port: number) => `${port + PORTS.serviceOffset} reuseport`;
  // nginx's default balancing (round robin) over the Service's pods, per request on each keep-alive connection.
  // max_fails=0: nginx 1.22's grpc_pass now and then fails a request with "upstream sent frame
  // for unknown stream"; the default max_fails=1 then takes that pod out for 10 s, and once all
  // three are out every request fails with "no live upstreams" (a full run's grpc-service).
  const upstream = (name: string, port: number) => `  upstream ${name} { ${serviceIps.map((ip) => `server ${ip}:${port} max_fails=0;`).join(' ')} keepalive 128; keepalive_requests 100000000; }\n`;
  return `${common(dir)}http {
${httpCommon(dir)}  ${h1Upstream('h1', `${serverIp}:${PORTS.http1}`)}
  upstream h2 { server ${serverIp}:${PORTS.h2}; keepalive 128; keepalive_requests 100000000; }
${upstream('svc_h1', PORTS.http1)}${upstream('svc_h2', PORTS.h2)}  server { listen ${listenIp}:${p(PORTS.http1)} backlog=4096; location / { ${h1('h1')} } }
  server {
    listen ${listenIp}:${p(PORTS.h2)} http2 backlog=4096;
    location / { ${h1('h1')} }
    location = ${GRPC_PATH} { grpc_pass grpc://h2; }
  }
  server { listen ${listenIp}:${s(PORTS.http1)} backlog=4096; location / { ${h1('svc_h1')} } }
  server {
    listen ${listenIp}:${s(PORTS.h2)} http2 backlog=4096;
    location / { ${h1('svc_h1')} }
    location = ${GRPC_PATH} { grpc_pass grpc://svc_h2; }
  }
}
stream {
  server { listen ${listenIp}:${p(PORTS.greet)} backlog=4096; proxy_pass ${serverIp}:${PORTS.greet}; }
  server { listen ${listenIp}:${p(PORTS.iperf)} backlog=4096; proxy_pass ${serverIp}:${PORTS.iperf}; }
}
`;
}
