// A small gRPC-Web (binary, application/grpc-web+proto) client over node's
// http/https modules, for the proxy tests and the proxy benchmark: just
// enough protobuf for ChatService.Subscribe and ChatService.Send.
//
// Frames: 1 flag byte (0x00 data, 0x80 trailers) + 4-byte big-endian length +
// payload. ChatMessage { username=1, message=2, timestamp=3 (int64), id=4 (not read), nonce=5 },
// SubscribeRequest { username=1 }, ChatEvent { oneof message=1, ready=2,
// heartbeat=3 }, Ready { timestamp=1, heartbeat_interval_ms=2 },
// Heartbeat { timestamp=1 }, SendReply { timestamp=1, id=2 }.
import http from 'node:http';
import https from 'node:https';
import { EventEmitter } from 'node:events';

// ---- protobuf -------------------------------------------------------------

function varint(value) {
  let n = BigInt(value);
  const bytes = [];
  do {
    let byte = Number(n & 0x7fn);
    n >>= 7n;
    if (n > 0n) byte |= 0x80;
    bytes.push(byte);
  } while (n > 0n);
  return Buffer.from(bytes);
}

function stringField(number, value) {
  if (!value) return Buffer.alloc(0);
  const bytes = Buffer.from(value, 'utf8');
  return Buffer.concat([varint((number << 3) | 2), varint(bytes.length), bytes]);
}

/** Decodes one message into [{ number, wire, value }] (value: BigInt or Buffer). */
function fields(buffer) {
  const out = [];
  let at = 0;
  const readVarint = () => {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (at >= buffer.length) throw new Error('truncated varint');
      const byte = buffer[at++];
      result |= BigInt(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return result;
      shift += 7n;
    }
  };
  while (at < buffer.length) {
    const key = Number(readVarint());
    const number = key >> 3;
    const wire = key & 7;
    if (wire === 0) out.push({ number, wire, value: readVarint() });
    else if (wire === 2) {
      const length = Number(readVarint());
      out.push({ number, wire, value: buffer.subarray(at, at + length) });
      at += length;
    } else if (wire === 1) { out.push({ number, wire, value: buffer.subarray(at, at + 8) }); at += 8; }
    else if (wire === 5) { out.push({ number, wire, value: buffer.subarray(at, at + 4) }); at += 4; }
    else throw new Error(`unsupported wire type ${wire}`);
  }
  return out;
}

export function encodeChatMessage({ username = '', message = '', nonce = '' }) {
  return Buffer.concat([stringField(1, username), stringField(2, message), stringField(5, nonce)]);
}

export function encodeSubscribeRequest(username) {
  return stringField(1, username);
}

function decodeChatMessage(buffer) {
  const message = { username: '', message: '', timestamp: 0, id: 0, nonce: '' };
  for (const { number, value } of fields(buffer)) {
    if (number === 1) message.username = value.toString('utf8');
    else if (number === 2) message.message = value.toString('utf8');
    else if (number === 3) message.timestamp = Number(BigInt.asIntN(64, value));
    else if (number === 4) message.id = Number(value);
    else if (number === 5) message.nonce = value.toString('utf8');
  }
  return message;
}

function decodeTimestamped(buffer) {
  const out = {};
  for (const { number, value } of fields(buffer)) {
    if (number === 1) out.timestamp = Number(value);
    else if (number === 2) out.heartbeatIntervalMs = Number(value);
  }
  return out;
}

/** ChatEvent → { type: 'message' | 'ready' | 'heartbeat', ... }. */
export function decodeChatEvent(buffer) {
  for (const { number, value } of fields(buffer)) {
    if (number === 1) return { type: 'message', message: decodeChatMessage(value) };
    if (number === 2) return { type: 'ready', ...decodeTimestamped(value) };
    if (number === 3) return { type: 'heartbeat', ...decodeTimestamped(value) };
  }
  return { type: 'unknown' };
}

// ---- framing --------------------------------------------------------------

export function frame(payload, flag = 0) {
  const header = Buffer.alloc(5);
  header[0] = flag;
  header.writeUInt32BE(payload.length, 1);
  return Buffer.concat([header, payload]);
}

/** Splits a byte stream into frames: onFrame(flag, payload). */
function deframer(onFrame) {
  let pending = Buffer.alloc(0);
  return (chunk) => {
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    while (pending.length >= 5) {
      const length = pending.readUInt32BE(1);
      if (pending.length < 5 + length) break;
      onFrame(pending[0], pending.subarray(5, 5 + length));
      pending = pending.subarray(5 + length);
    }
  };
}

function parseTrailers(payload) {
  const trailers = {};
  for (const line of payload.toString('utf8').split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) trailers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return trailers;
}

// ---- calls ----------------------------------------------------------------

/** A keep-alive agent for `base` (http or https; self-signed certificates accepted). */
export function agentFor(base, options = {}) {
  const url = new URL(base);
  return url.protocol === 'https:'
    ? new https.Agent({ keepAlive: true, rejectUnauthorized: false, ...options })
    : new http.Agent({ keepAlive: true, ...options });
}

function post(base, method, body, agent) {
  const url = new URL(`ChatService/${method}`, base);
  const transport = url.protocol === 'https:' ? https : http;
  return transport.request(url, {
    method: 'POST',
    agent,
    rejectUnauthorized: false,
    headers: {
      'content-type': 'application/grpc-web+proto',
      accept: 'application/grpc-web+proto',
      'x-grpc-web': '1',
      'content-length': body.length,
    },
  });
}

/**
 * ChatService/Send. Resolves with { httpStatus, grpcStatus, grpcMessage,
 * timestamp, id } once the whole response has been read.
 */
export function send(base, message, { agent } = {}) {
  return new Promise((resolve, reject) => {
    const body = frame(encodeChatMessage(message));
    const request = post(base, 'Send', body, agent);
    request.once('error', reject);
    request.once('response', (response) => {
      let grpcStatus = response.headers['grpc-status'];
      let grpcMessage = response.headers['grpc-message'];
      let timestamp;
      let id;
      const feed = deframer((flag, payload) => {
        if (flag & 0x80) {
          const trailers = parseTrailers(payload);
          grpcStatus ??= trailers['grpc-status'];
          grpcMessage ??= trailers['grpc-message'];
        } else {
          for (const { number, value } of fields(payload)) {
            if (number === 1) timestamp = Number(value);
            else if (number === 2) id = Number(value);
          }
        }
      });
      response.on('data', feed);
      response.once('error', reject);
      response.once('end', () => resolve({
        httpStatus: response.statusCode,
        grpcStatus: grpcStatus === undefined ? undefined : Number(grpcStatus),
        grpcMessage: grpcMessage === undefined ? undefined : decodeURIComponent(grpcMessage),
        timestamp,
        id,
      }));
    });
    request.end(body);
  });
}

/**
 * ChatService/Subscribe. Returns an EventEmitter with:
 *   'event' (ChatEvent, arrival time from performance.now()),
 *   'end' ({ httpStatus, grpcStatus, grpcMessage, error }) once, however it ends;
 * and `ready` (a promise of the Ready event, rejected if the stream ends first),
 * `ended` (a promise of the end info), `close()`.
 */
export function subscribe(base, username, { agent } = {}) {
  const stream = new EventEmitter();
  const body = frame(encodeSubscribeRequest(username));
  const request = post(base, 'Subscribe', body, agent);
  let finished = false;
  const info = {};
  const finish = (extra = {}) => {
    if (finished) return;
    finished = true;
    Object.assign(info, extra);
    stream.emit('end', info);
  };
  stream.ended = new Promise((resolve) => stream.once('end', resolve));
  stream.ready = new Promise((resolve, reject) => {
    const onEvent = (event) => {
      if (event.type === 'ready') { stream.off('end', onEnd); stream.off('event', onEvent); resolve(event); }
    };
    const onEnd = (end) => {
      stream.off('event', onEvent);
      reject(new Error(`Subscribe ended before Ready: ${JSON.stringify(end)}`));
    };
    stream.on('event', onEvent);
    stream.once('end', onEnd);
  });
  stream.ready.catch(() => {}); // reported through whoever awaits it
  request.once('error', (error) => finish({ error: error.message }));
  request.once('response', (response) => {
    info.httpStatus = response.statusCode;
    if (response.headers['grpc-status'] !== undefined) info.grpcStatus = Number(response.headers['grpc-status']);
    if (response.headers['grpc-message'] !== undefined) info.grpcMessage = decodeURIComponent(response.headers['grpc-message']);
    const feed = deframer((flag, payload) => {
      if (flag & 0x80) {
        const trailers = parseTrailers(payload);
        if (trailers['grpc-status'] !== undefined) info.grpcStatus = Number(trailers['grpc-status']);
        if (trailers['grpc-message'] !== undefined) info.grpcMessage = decodeURIComponent(trailers['grpc-message']);
      } else {
        const at = performance.now();
        stream.emit('event', decodeChatEvent(payload), at);
      }
    });
    response.on('data', feed);
    response.once('error', (error) => finish({ error: error.message }));
    response.once('aborted', () => finish({ error: 'aborted' }));
    response.once('end', () => finish());
    response.once('close', () => finish(response.complete ? {} : { error: 'closed before the end' }));
  });
  request.end(body);
  stream.close = () => { request.destroy(); finish({ error: 'closed by us' }); };
  return stream;
}
