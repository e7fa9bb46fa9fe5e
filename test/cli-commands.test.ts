import test from 'ava';
import { commandsFor } from '../src/cli/main.ts';

test('run loads only its own command module; help, unknown commands and the demo load all', (t) => {
  t.deepEqual(commandsFor(['node', 'mesh-agent', 'run', '--pods', 'x']), ['run']);
  t.deepEqual(commandsFor(['node', 'mesh-agent', 'stat', 'deploy']), ['stat']);
  const all = commandsFor(['node', 'mesh-agent']);
  t.true(all.length >= 8 && all.includes('controller'));
  t.deepEqual(commandsFor(['node', 'mesh-agent', '--help']), all);
  t.deepEqual(commandsFor(['node', 'mesh-agent', 'nope']), all);
  t.deepEqual(commandsFor(['node', 'mesh-agent', 'demo']), all, 'the demo checks that the controller command exists');
});
