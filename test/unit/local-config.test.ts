/**
 * The settings of `npm start` (src/launcher/local-config.ts) and the `pflex local` hints
 * (src/launcher/local-control-protocol.ts): default ports, the layout from PFLEX_LOCAL_PORT_BASE,
 * the overrides, the restart delay, and refusals naming the variable.
 */
import t from 'tap';
import { resolve } from 'node:path';
import {
  DEFAULT_LOCAL_PORTS,
  LOCAL_PORT_SPAN,
  LocalConfigError,
  localClusterConfig,
  localPortsFromBase,
} from '../../src/launcher/local-config.js';
import { localCommandHint } from '../../src/launcher/local-control-protocol.js';

function allPorts(ports: ReturnType<typeof localPortsFromBase>): number[] {
  return [ports.mdm, ...Object.values(ports.sdc), ...ports.sds.flatMap((sds) => [sds.data, sds.control, sds.mgmt])];
}

t.test('without settings: ./data, the documented ports, no automatic restart', async (t) => {
  const config = localClusterConfig({});
  t.equal(config.dataDir, resolve('data'));
  t.same(config.ports, DEFAULT_LOCAL_PORTS);
  t.same(config.ports.sds.map((sds) => [sds.data, sds.control, sds.mgmt]), [[9700, 9100, 9200], [9701, 9101, 9201], [9702, 9102, 9202]]);
  t.same(config.ports.sdc, { nbd: 10809, device: 8005, control: 8003, mgmt: 8004 });
  t.equal(config.restartDelayS, undefined);
  t.equal(localClusterConfig({ PFLEX_LOCAL_RESTART_DELAY_S: 'off' }).restartDelayS, undefined);
  t.equal(localClusterConfig({ PFLEX_LOCAL_RESTART_DELAY_S: '' }).restartDelayS, undefined);
});

t.test('PFLEX_LOCAL_PORT_BASE: 14 distinct ports within the span; the old two variables still override', async (t) => {
  const config = localClusterConfig({ PFLEX_LOCAL_PORT_BASE: '20000', PFLEX_DATA_DIR: '/var/tmp/x', PFLEX_LOCAL_RESTART_DELAY_S: '5' });
  const ports = allPorts(config.ports);
  t.equal(new Set(ports).size, 14, 'all distinct');
  t.ok(ports.every((port) => port >= 20000 && port < 20000 + LOCAL_PORT_SPAN), 'all within the span');
  t.equal(config.ports.mdm, 20000);
  t.equal(config.ports.sdc.nbd, 20001);
  t.same(config.ports.sds[2], { data: 20012, control: 20022, mgmt: 20032 });
  t.equal(config.dataDir, '/var/tmp/x');
  t.equal(config.restartDelayS, 5);
  const overridden = localClusterConfig({ PFLEX_LOCAL_PORT_BASE: '20000', POWERFLEX_MDM_PORT: '18001', POWERFLEX_SDC_NBD_PORT: '20809' });
  t.equal(overridden.ports.mdm, 18001);
  t.equal(overridden.ports.sdc.nbd, 20809);
  t.equal(overridden.ports.sdc.device, 20002, 'the rest stay on the base');
});

t.test('bad values are refused with the variable and the range named', async (t) => {
  const bad: [Record<string, string>, RegExp][] = [
    [{ PFLEX_LOCAL_PORT_BASE: '80' }, /PFLEX_LOCAL_PORT_BASE="80" .*1024 to 65503/],
    [{ PFLEX_LOCAL_PORT_BASE: '65504' }, /PFLEX_LOCAL_PORT_BASE/],
    [{ PFLEX_LOCAL_PORT_BASE: '2e4' }, /PFLEX_LOCAL_PORT_BASE="2e4"/],
    [{ PFLEX_LOCAL_PORT_BASE: '-1' }, /PFLEX_LOCAL_PORT_BASE/],
    [{ POWERFLEX_MDM_PORT: '70000' }, /POWERFLEX_MDM_PORT="70000" .*1 to 65535/],
    [{ PFLEX_LOCAL_RESTART_DELAY_S: '0' }, /PFLEX_LOCAL_RESTART_DELAY_S="0" .*1 to 3600/],
    [{ PFLEX_LOCAL_RESTART_DELAY_S: '1.5' }, /PFLEX_LOCAL_RESTART_DELAY_S/],
    [{ PFLEX_LOCAL_RESTART_DELAY_S: '3601' }, /PFLEX_LOCAL_RESTART_DELAY_S/],
  ];
  for (const [env, message] of bad) {
    const error = (() => {
      try {
        localClusterConfig(env);
        return undefined;
      } catch (thrown) {
        return thrown;
      }
    })();
    t.ok(error instanceof LocalConfigError, `${JSON.stringify(env)} is refused`);
    t.match((error as Error | undefined)?.message, message);
  }
});

t.test('pflex local hints name the data dir unless it is ./data', async (t) => {
  t.equal(localCommandHint(resolve('data'), 'start', 'sds-2'), 'npx pflex local start sds-2');
  t.equal(localCommandHint('/var/tmp/lab', 'status'), 'npx pflex local status --data-dir /var/tmp/lab');
  t.equal(localCommandHint("/var/tmp/my lab's", 'kill', 'sdc1'), "npx pflex local kill sdc1 --data-dir '/var/tmp/my lab'\\''s'");
});
