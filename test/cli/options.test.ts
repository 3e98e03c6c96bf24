/**
 * The option table of `start` and `dev` (cli/options.ts): each row is a
 * flag, a variable, a default, a parser and help, and commander, the typed
 * config and START_DEFAULTS all come from it.
 */
import { Command } from 'commander';
import t from 'tap';

import { commanderOptions, OPTIONS, START_DEFAULTS, startConfigFrom, type OptionName } from '../../src/cli/options.js';

const DB = 'postgres://u@127.0.0.1:5432/app';

function parse(args: string[], env: NodeJS.ProcessEnv = {}, command: 'start' | 'dev' = 'start') {
  const program = new Command(command).exitOverride();
  for (const option of commanderOptions(command)) program.addOption(option);
  const saved = { ...process.env };
  Object.assign(process.env, env);
  try {
    program.parse(args, { from: 'user' });
  } finally {
    for (const key of Object.keys(env)) if (saved[key] === undefined) delete process.env[key];
  }
  return startConfigFrom(program.opts(), command, { databaseUrl: DB });
}

t.test('every row: a REALTIMED_ variable, a --flag, help; names unique', async (t) => {
  const flags = new Set<string>();
  const envs = new Set<string>();
  for (const [name, row] of Object.entries(OPTIONS)) {
    t.match(row.env, /^REALTIMED_[A-Z_]+$/, `${name}: ${row.env}`);
    t.match(row.flag, /^--[a-z-]+( <[a-z]+>)?$/, `${name}: ${row.flag}`);
    t.ok(row.help.length > 10, `${name} has help`);
    flags.add(row.flag.split(' ')[0] as string);
    envs.add(row.env);
  }
  t.equal(flags.size, Object.keys(OPTIONS).length, 'flags unique');
  t.equal(envs.size, Object.keys(OPTIONS).length, 'variables unique');
});

t.test('no flag: the defaults, START_DEFAULTS included', async (t) => {
  const config = parse([]);
  for (const name of Object.keys(OPTIONS) as OptionName[]) {
    if (name === 'listenUrl') continue;
    t.same(config[name], START_DEFAULTS[name], `${name} = ${JSON.stringify(START_DEFAULTS[name])}`);
  }
  t.equal(config.listenUrl, DB, 'LISTEN on --database-url unless --listen-url');
});

t.test('flags and variables are parsed; the flag wins', async (t) => {
  const config = parse(
    ['--port', '4100', '--roles', 'anon, authenticated,customer', '--no-anon', '--jwt-secret', 's'.repeat(32), '--permessage-deflate'],
    { REALTIMED_PORT: '4200', REALTIMED_PING_INTERVAL: '1000', REALTIMED_NO_WEBHOOKS: '1', REALTIMED_ALLOWED_ORIGINS: 'https://a.example,https://b.example' },
  );
  t.equal(config.port, 4100, 'the flag over the variable');
  t.equal(config.pingIntervalMs, 1000, 'a variable alone');
  t.same(config.roles, ['anon', 'authenticated', 'customer'], 'a list, trimmed');
  t.equal(config.allowAnon, false, '--no-anon');
  t.equal(config.webhooks, false, 'REALTIMED_NO_WEBHOOKS');
  t.equal(config.perMessageDeflate, true);
  t.same(config.allowedOrigins, ['https://a.example', 'https://b.example']);
});

t.test('dev differs where its row says so', async (t) => {
  const config = parse([], {}, 'dev');
  t.equal(config.inspector, true, 'the inspector is on');
  t.equal(config.logLevel, 'warn', 'quieter logs');
  t.equal(parse(['--no-inspector'], {}, 'dev').inspector, false);
  t.equal(parse(['--inspector']).inspector, true, 'start: --inspector turns it on');
});

t.test('a bad value is refused by its parser, from a flag or a variable', async (t) => {
  t.throws(() => parse(['--port', '70000']), /expected a whole number from 0 to 65535/);
  t.throws(() => parse([], { REALTIMED_MAX_REPLAY: '-1' }), /expected a whole number/);
  t.throws(() => parse(['--roles', 'anon,"x"']), { code: 'RT_ERR_USAGE' }, 'and the whole config is checked');
});

t.test('the operator switches: --idle-timeout, --no-presence, --no-ephemeral, --no-client-publish', async (t) => {
  const defaults = parse([]);
  t.same([defaults.idleTimeoutMs, defaults.allowPresence, defaults.allowEphemeral, defaults.allowClientPublish], [0, true, true, true], 'off by default');
  const flags = parse(['--idle-timeout', '60000', '--no-presence', '--no-ephemeral', '--no-client-publish']);
  t.same([flags.idleTimeoutMs, flags.allowPresence, flags.allowEphemeral, flags.allowClientPublish], [60000, false, false, false]);
  const env = parse([], { REALTIMED_IDLE_TIMEOUT: '500', REALTIMED_NO_PRESENCE: '1', REALTIMED_NO_CLIENT_PUBLISH: '1' });
  t.same([env.idleTimeoutMs, env.allowPresence, env.allowEphemeral, env.allowClientPublish], [500, false, true, false], 'or their variables');
  t.throws(() => parse(['--idle-timeout', '-1']), 'a negative timeout is refused');
  t.throws(() => parse(['--idle-timeout', '1e3']), 'so is one that is not a whole number');
});
