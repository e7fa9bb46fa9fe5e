export { createHttp2Handler } from './handler.ts';
export type { Http2HandlerOptions } from './handler.ts';
export { Http2SessionPool } from './pool.ts';
export type { PoolOptions } from './pool.ts';
