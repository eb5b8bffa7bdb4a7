// A small gRPC-Web (binary, application/grpc-web+proto) client over node's
// http/https modules, for the proxy tests and the proxy benchmark:
// ChatService.Subscribe and ChatService.Send, and any other unary call by
// name (`unary`, for seeding: CreateRoom, Search).
//
// Frames: 1 flag byte (0x00 data, 0x80 trailers) + 4-byte big-endian length +
// payload. The payloads are the messages of proto/chat.proto, read by
// protobufjs when this module loads (field numbers and types come from
// there), and handed to the tests as plain objects: a ChatMessage as
// { username, message, timestamp, id, nonce } (numbers; its room is not
// read), a ChatEvent as { type: 'message', message } | { type: 'ready',
// timestamp, heartbeatIntervalMs } | { type: 'heartbeat', timestamp } |
// { type: 'unknown' } (its other kinds), a SendReply as { timestamp, id }.
import http from 'node:http';
import https from 'node:https';
import { EventEmitter } from 'node:events';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

// ---- protobuf -------------------------------------------------------------

const proto = protobuf.loadSync(fileURLToPath(new URL('../proto/chat.proto', import.meta.url)));
const ChatMessage = proto.lookupType('ChatMessage');
const SubscribeRequest = proto.lookupType('SubscribeRequest');
const ChatEvent = proto.lookupType('ChatEvent');

/** A `type` message decoded from `buffer`: a plain object of the fields on the wire (64-bit ones as numbers). */
function decode(type, buffer) {
  return type.toObject(type.decode(buffer), { longs: Number, oneofs: true });
}

/** `fields` of `type` encoded, leaving out the empty ones (as proto3 does). */
function encode(type, fields) {
  const present = Object.fromEntries(Object.entries(fields).filter(([, value]) => value));
  return Buffer.from(type.encode(present).finish());
}

/** Only those of `names` that were on the wire. */
function pick(object, names) {
  return Object.fromEntries(names.filter((name) => object[name] !== undefined).map((name) => [name, object[name]]));
}

export function encodeSubscribeRequest(username) {
  return encode(SubscribeRequest, { username });
}

function chatMessage(fields) {
  return { username: '', message: '', timestamp: 0, id: 0, nonce: '', ...pick(fields, ['username', 'message', 'timestamp', 'id', 'nonce']) };
}

/** ChatEvent → { type: 'message' | 'ready' | 'heartbeat' | 'unknown', ... }. */
export function decodeChatEvent(buffer) {
  const event = decode(ChatEvent, buffer);
  switch (event.event) {
    case 'message': return { type: 'message', message: chatMessage(event.message) };
    case 'ready': return { type: 'ready', ...pick(event.ready, ['timestamp', 'heartbeatIntervalMs']) };
    case 'heartbeat': return { type: 'heartbeat', ...pick(event.heartbeat, ['timestamp']) };
    default: return { type: 'unknown' };
  }
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
export async function send(base, { username = '', message = '', nonce = '', room = '' }, { agent } = {}) {
  const answer = await unary(base, 'Send', 'ChatMessage', { username, message, nonce, room }, 'SendReply', { agent });
  return {
    httpStatus: answer.httpStatus,
    grpcStatus: answer.grpcStatus,
    grpcMessage: answer.grpcMessage,
    timestamp: answer.reply?.timestamp,
    id: answer.reply?.id,
  };
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

/**
 * A unary ChatService call `method` (e.g. 'CreateRoom'): `fields` sent as
 * a `request` (a message type of proto/chat.proto, e.g.
 * 'CreateRoomRequest'), the answer read as a `reply` (e.g. 'Room'), with
 * every field (64-bit ones as numbers, empty ones as their defaults).
 * Resolves with { httpStatus, grpcStatus, grpcMessage, reply }.
 */
export function unary(base, method, request, fields, reply, { agent } = {}) {
  const replyType = proto.lookupType(reply);
  return new Promise((resolve, reject) => {
    const body = frame(encode(proto.lookupType(request), fields));
    const call = post(base, method, body, agent);
    call.once('error', reject);
    call.once('response', (response) => {
      let grpcStatus = response.headers['grpc-status'];
      let grpcMessage = response.headers['grpc-message'];
      let answer;
      const feed = deframer((flag, payload) => {
        if (flag & 0x80) {
          const trailers = parseTrailers(payload);
          grpcStatus ??= trailers['grpc-status'];
          grpcMessage ??= trailers['grpc-message'];
        } else {
          answer = replyType.toObject(replyType.decode(payload), { longs: Number, defaults: true, arrays: true });
        }
      });
      response.on('data', feed);
      response.once('error', reject);
      response.once('end', () => resolve({
        httpStatus: response.statusCode,
        grpcStatus: grpcStatus === undefined ? undefined : Number(grpcStatus),
        grpcMessage: grpcMessage === undefined ? undefined : decodeURIComponent(grpcMessage),
        reply: answer,
      }));
    });
    call.end(body);
  });
}
