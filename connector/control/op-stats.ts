/**
 * Per-op request statistics kept in plain numbers on the data path (one Map lookup and a few additions per
 * request), exported to Prometheus at scrape time as a counter/histogram family. prom-client's own labelled
 * metrics cost ~2 µs per request here, most of it hashing label sets.
 */
import type { Registry } from 'prom-client';

interface Row { ok: number; codes: Map<string, number>; buckets: number[]; sum: number; count: number; bytesIn: number; bytesOut: number }
type Value = { value: number; labels: Record<string, string | number>; metricName?: string };

export class OpStats {
  private readonly rows = new Map<string, Row>();

  constructor(private readonly bounds: number[]) {}

  record(op: string, seconds: number, bytesIn: number, bytesOut: number, code: string | undefined): void {
    let r = this.rows.get(op);
    if (!r) this.rows.set(op, (r = { ok: 0, codes: new Map(), buckets: new Array(this.bounds.length).fill(0), sum: 0, count: 0, bytesIn: 0, bytesOut: 0 }));
    if (code) r.codes.set(code, (r.codes.get(code) ?? 0) + 1);
    else r.ok++;
    let i = 0;
    while (i < this.bounds.length && seconds > this.bounds[i]!) i++;
    if (i < this.bounds.length) r.buckets[i]!++;
    r.sum += seconds;
    r.count++;
    r.bytesIn += bytesIn;
    r.bytesOut += bytesOut;
  }

  /** Register the four families (requests, duration, received and sent bytes) on `registry`. */
  register(registry: Registry, names: { requests: string; duration: string; received: string; sent: string }, help: Record<keyof typeof names, string>): void {
    const family = (name: string, helpText: string, type: 'counter' | 'histogram', values: () => Value[]) => {
      const m = { name, help: helpText, type, aggregator: 'sum', get: async () => ({ name, help: helpText, type, aggregator: 'sum', values: values() }), reset() {} };
      registry.registerMetric(m as unknown as Parameters<Registry['registerMetric']>[0]);
    };
    family(names.requests, help.requests, 'counter', () => [...this.rows].flatMap(([op, r]) => [
      ...(r.ok ? [{ labels: { op, code: 'OK' }, value: r.ok }] : []),
      ...[...r.codes].map(([code, n]) => ({ labels: { op, code }, value: n })),
    ]));
    family(names.duration, help.duration, 'histogram', () => [...this.rows].flatMap(([op, r]) => {
      let acc = 0;
      const out: Value[] = this.bounds.map((le, i) => ({ metricName: `${names.duration}_bucket`, labels: { le, op }, value: (acc += r.buckets[i]!) }));
      out.push({ metricName: `${names.duration}_bucket`, labels: { le: '+Inf', op }, value: r.count });
      out.push({ metricName: `${names.duration}_sum`, labels: { op }, value: r.sum });
      out.push({ metricName: `${names.duration}_count`, labels: { op }, value: r.count });
      return out;
    }));
    family(names.received, help.received, 'counter', () => [...this.rows].map(([op, r]) => ({ labels: { op }, value: r.bytesIn })));
    family(names.sent, help.sent, 'counter', () => [...this.rows].map(([op, r]) => ({ labels: { op }, value: r.bytesOut })));
  }
}
