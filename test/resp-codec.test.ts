/**
 * RESP codec tests, no network: multibulk and inline requests, every split of a pipelined stream, limits
 * (header line, arg count, bulk length, missing CRLF), the global byte budget across parsers, property-based
 * round trips; Redis glob patterns.
 */
import test from 'ava';
import fc from 'fast-check';
import { ByteBudget, RespParser, RespProtocolError, VIEW_BELOW } from '../adapters/resp/codec.js';
import { globToRegExp } from '../adapters/resp/commands.js';

const LIMITS = { maxArgs: 1024, maxBulkBytes: 1 << 20 };

function encode(args: Buffer[]): Buffer {
  return Buffer.concat([Buffer.from(`*${args.length}\r\n`), ...args.flatMap((a) => [Buffer.from(`$${a.length}\r\n`), a, Buffer.from('\r\n')])]);
}

function parseChunks(chunks: Buffer[], budget = new ByteBudget(1 << 30)): { cmds: Buffer[][]; parser: RespParser } {
  const parser = new RespParser(LIMITS, budget);
  const cmds: Buffer[][] = [];
  for (const c of chunks) parser.push(c, (a) => cmds.push(a));
  return { cmds, parser };
}

const str = (cmds: Buffer[][]) => cmds.map((a) => a.map((b) => b.toString('latin1')));

test('resp codec - multibulk and inline requests', (t) => {
  const stream = Buffer.concat([encode([Buffer.from('SET'), Buffer.from('k'), Buffer.from('v\r\nx')]), Buffer.from('PING\r\n'), Buffer.from('ECHO  a\tb\n'), encode([Buffer.from('GET'), Buffer.from('')])]);
  t.deepEqual(str(parseChunks([stream]).cmds), [['SET', 'k', 'v\r\nx'], ['PING'], ['ECHO', 'a', 'b'], ['GET', '']]);
});

test('resp codec - every two-way split of a pipelined stream gives the same commands, and no budget is left held', (t) => {
  const cmds = [[Buffer.from('SET'), Buffer.from('key:1'), Buffer.alloc(300, 7)], [Buffer.from('GET'), Buffer.from('key:1')], [Buffer.from('DEL'), Buffer.from('a'), Buffer.from('b')]];
  const stream = Buffer.concat(cmds.map(encode));
  for (let i = 0; i <= stream.length; i++) {
    const budget = new ByteBudget(1 << 30);
    const { cmds: got, parser } = parseChunks([stream.subarray(0, i), stream.subarray(i)], budget);
    t.deepEqual(got, cmds, `split at ${i}`);
    t.false(parser.midRequest);
    t.is(budget.used, 0, `split at ${i}`);
  }
});

test('resp codec - byte-by-byte delivery', (t) => {
  const cmd = [Buffer.from('SET'), Buffer.from('k'), Buffer.alloc(5000, 1)];
  const stream = encode(cmd);
  const chunks = [...stream].map((b) => Buffer.from([b]));
  t.deepEqual(parseChunks(chunks).cmds, [cmd]);
});

test('resp codec - property: random commands, random chunking', (t) => {
  fc.assert(fc.property(
    fc.array(fc.array(fc.uint8Array({ maxLength: 200 }), { minLength: 1, maxLength: 5 }), { minLength: 1, maxLength: 8 }),
    fc.array(fc.integer({ min: 1, max: 97 }), { minLength: 1, maxLength: 20 }),
    (raw, cuts) => {
      const cmds = raw.map((c) => c.map((u) => Buffer.from(u)));
      const stream = Buffer.concat(cmds.map(encode));
      const chunks: Buffer[] = [];
      let pos = 0;
      for (let i = 0; pos < stream.length; i++) {
        const n = cuts[i % cuts.length]!;
        chunks.push(stream.subarray(pos, pos + n));
        pos += n;
      }
      const budget = new ByteBudget(1 << 30);
      const got = parseChunks(chunks, budget).cmds;
      return JSON.stringify(got.map((a) => a.map((b) => b.toString('hex')))) === JSON.stringify(cmds.map((a) => a.map((b) => b.toString('hex')))) && budget.used === 0;
    },
  ), { numRuns: 200 });
  t.pass();
});

test('resp codec - bulk arguments of VIEW_BELOW bytes and more are owned copies, not views of the socket chunk', (t) => {
  const value = Buffer.alloc(VIEW_BELOW, 7);
  const stream = encode([Buffer.from('SET'), Buffer.from('k'), value]);
  const { cmds } = parseChunks([stream]);
  stream.fill(0);
  t.true(cmds[0]![2]!.equals(value));
});

test('resp codec - limits are protocol errors', (t) => {
  const bad = (input: string | Buffer, re: RegExp) => {
    const err = t.throws(() => parseChunks([typeof input === 'string' ? Buffer.from(input) : input]), { instanceOf: RespProtocolError });
    t.regex(err!.message, re);
  };
  bad(`*${LIMITS.maxArgs + 1}\r\n`, /invalid multibulk length/);
  bad(`*1\r\n$${LIMITS.maxBulkBytes + 1}\r\n`, /invalid bulk length/);
  bad('*1\r\n$-5\r\n', /invalid bulk length/);
  bad('*1\r\n$abc\r\n', /invalid bulk length/);
  bad('*x\r\n', /invalid multibulk length/);
  bad('*1\r\n+PING\r\n', /expected '\$'/);
  bad('*1\r\n$4\r\nPINGxx', /expected '\\r\\n'/);
  bad(Buffer.alloc(70 * 1024, 65), /too big inline request/);
  bad(Buffer.concat([Buffer.from('*1\r\n$'), Buffer.alloc(70 * 1024, 49)]), /too big header line/);
});

test('resp codec - the byte budget is global: declared bulks are charged, a parser over the cap fails, dispose returns its charge', (t) => {
  const budget = new ByteBudget(100_000);
  const a = new RespParser(LIMITS, budget);
  const b = new RespParser(LIMITS, budget);
  a.push(Buffer.from('*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$60000\r\nabc'), () => t.fail());
  t.true(budget.used >= 60_000);
  const err = t.throws(() => b.push(Buffer.from('*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$60000\r\nabc'), () => t.fail()), { instanceOf: RespProtocolError });
  t.true(err!.budget);
  b.dispose();
  a.dispose();
  t.is(budget.used, 0);
  // The budget frees when a command completes.
  const c = new RespParser(LIMITS, budget);
  const done: Buffer[][] = [];
  c.push(Buffer.concat([Buffer.from('*2\r\n$3\r\nGET\r\n$90000\r\n'), Buffer.alloc(90_000, 1)]), (x) => done.push(x));
  t.true(budget.used >= 90_000);
  c.push(Buffer.from('\r\n'), (x) => done.push(x));
  t.is(done.length, 1);
  t.is(budget.used, 0);
});

test('resp glob - Redis patterns', (t) => {
  const m = (p: string, s: string) => globToRegExp(p).test(s);
  t.true(m('*', 'anything'));
  t.true(m('key:*', 'key:__rand_int__'));
  t.false(m('key:*', 'xkey:1'));
  t.true(m('h?llo', 'hello'));
  t.true(m('h[ae]llo', 'hallo'));
  t.false(m('h[^e]llo', 'hello'));
  t.true(m('h[a-c]llo', 'hbllo'));
  t.true(m('a\\*b', 'a*b'));
  t.false(m('a\\*b', 'axb'));
  t.true(m('x.y(z)+', 'x.y(z)+'));
  t.true(m('*kv_bytes', 'model@1@0@abc@bfloat16kv_bytes'));
});
