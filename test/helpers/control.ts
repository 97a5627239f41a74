/** Test helpers for the control plane: a real sidecar with the control extension's plugins, on free ports. */
import { rmSync } from 'node:fs';
import path from 'node:path';
import { KvstashClient } from '../../connector/client.js';
import { loadConfig, type Config } from '../../connector/config.js';
import { controlPlugins } from '../../cli/control.js';
import { DataAuthPlugin } from '../../connector/control/data-auth.js';
import { ControlClient, type ControlClientOptions } from '../../connector/control/grpc-client.js';
import { ControlServerPlugin } from '../../connector/control/grpc-server.js';
import { MetricsPlugin } from '../../connector/control/metrics.js';
import { CONTROL_SETTINGS } from '../../connector/control/settings.js';
import { TierEventsPublisher } from '../../connector/control/tier-events-publisher.js';
import { rootLogger } from '../../connector/log.js';
import { Sidecar } from '../../connector/server/sidecar.js';
import type { DriverRegistry } from '../../connector/storage/registry.js';
import { tempDir, uniqueIpc } from './sidecar.js';

export interface ControlRunning {
  sidecar: Sidecar;
  config: Config;
  endpoint: string;
  dir: string;
  grpc?: ControlServerPlugin;
  metrics?: MetricsPlugin;
  events?: TierEventsPublisher;
  auth?: DataAuthPlugin;
  control: (opts?: ControlClientOptions) => ControlClient;
  client: (timeoutMs?: number) => KvstashClient;
  stop: () => Promise<void>;
}

/** Start an in-process sidecar with the control plugins; gRPC and metrics on port 0 unless overridden. */
export async function startControl(over: Record<string, unknown> = {}, registry?: DriverRegistry): Promise<ControlRunning> {
  const dir = tempDir('kvstash-control-');
  const endpoint = uniqueIpc(dir);
  const config = loadConfig({
    endpoints: [endpoint], fileRoot: path.join(dir, 'tier'), dramBytes: '64MiB', fileBytes: '256MiB', logLevel: 'silent',
    grpc: '127.0.0.1:0', metrics: '', ...over,
  }, {}, undefined, CONTROL_SETTINGS);
  rootLogger(config.logLevel);
  const sidecar = new Sidecar(config, registry);
  const plugins = await controlPlugins(config);
  for (const p of plugins) sidecar.use(p);
  await sidecar.start();
  const grpc = plugins.find((p): p is ControlServerPlugin => p instanceof ControlServerPlugin);
  const controls: ControlClient[] = [];
  const clients: KvstashClient[] = [];
  return {
    sidecar, config, endpoint, dir, grpc,
    metrics: plugins.find((p): p is MetricsPlugin => p instanceof MetricsPlugin),
    events: plugins.find((p): p is TierEventsPublisher => p instanceof TierEventsPublisher),
    auth: plugins.find((p): p is DataAuthPlugin => p instanceof DataAuthPlugin),
    control: (opts = {}) => {
      const c = new ControlClient(grpc!.address, opts);
      controls.push(c);
      return c;
    },
    client: (timeoutMs = 5000) => {
      const c = new KvstashClient(endpoint, { timeoutMs });
      clients.push(c);
      return c;
    },
    stop: async () => {
      for (const c of controls) c.close();
      for (const c of clients) c.close();
      await sidecar.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A descriptor in tenant `tenant`. */
export function nsOf(tenant: string, model = 'm') {
  return { model, engine: 'vllm', layout: 'default', tenant, tp_rank: 0, tp_size: 1, pp_rank: 0, pp_size: 1 };
}
