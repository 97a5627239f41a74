/**
 * The control-plane service definition, built at runtime from protocol/kvstash.proto with protobufjs (already a
 * dependency; @grpc/proto-loader is not, and the definition it would build is these ~40 lines).
 * Messages are plain objects with the .proto field names (snake_case), 64-bit integers as numbers, bytes as
 * Buffers, unset sub-messages as null and set oneofs named by a virtual `kind` field.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';

export const SERVICE = 'kvstash.v1.Control';

/** protocol/kvstash.proto, found from this file in the source tree and in dist/. */
export function protoPath(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const p = path.join(dir, 'protocol', 'kvstash.proto');
    if (existsSync(p)) return p;
    const up = path.dirname(dir);
    if (up === dir) throw new Error('protocol/kvstash.proto not found above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

const TO_OBJECT: protobuf.IConversionOptions = { longs: Number, defaults: true, oneofs: true, arrays: true };

let cached: grpc.ServiceDefinition | undefined;

/** The grpc-js service definition; method keys are the .proto method names (Lookup, Stats, …). */
export function controlService(): grpc.ServiceDefinition {
  if (cached) return cached;
  const root = new protobuf.Root().loadSync(protoPath(), { keepCase: true });
  root.resolveAll();
  const svc = root.lookupService(SERVICE);
  const def: Record<string, grpc.MethodDefinition<object, object>> = {};
  for (const m of svc.methodsArray) {
    const Req = m.resolvedRequestType!;
    const Res = m.resolvedResponseType!;
    def[m.name] = {
      path: `/${SERVICE}/${m.name}`,
      requestStream: m.requestStream === true,
      responseStream: m.responseStream === true,
      requestSerialize: (o: object) => Buffer.from(Req.encode(Req.fromObject(o)).finish()),
      requestDeserialize: (b: Buffer) => Req.toObject(Req.decode(b), TO_OBJECT),
      responseSerialize: (o: object) => Buffer.from(Res.encode(Res.fromObject(o)).finish()),
      responseDeserialize: (b: Buffer) => Res.toObject(Res.decode(b), TO_OBJECT),
      originalName: m.name,
    };
  }
  cached = def;
  return def;
}

/** A grpc-js client class for the control service. */
export function controlClientClass(): grpc.ServiceClientConstructor {
  return grpc.makeGenericClientConstructor(controlService(), 'Control');
}
