import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments, parse } from 'yaml';
import { injectYaml, InjectError } from '../src/k8s/inject.ts';
import { ANNOTATIONS } from '../src/k8s/annotations.ts';
import { validateObject } from './fixtures/manifests/k8s-schema.ts';
import { runCli } from './fixtures/manifests/run-cli.ts';
import { testTempDir } from './helpers/temp-dir.ts';
import { joinYamlStreams } from '../src/cli/manifest-inputs.ts';
import { meshBin } from '../src/sim/dist-bin.ts';
import { createTrustAnchor } from '../src/identity/x509.ts';
import { issueServingCertificate } from './helpers/serving-cert.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

const fixture = (name: string) => readFileSync(new URL(`./fixtures/manifests/${name}`, import.meta.url), 'utf8');
const objectsOf = (yaml: string): any[] => parseAllDocuments(yaml).map((d: any) => d.toJS());
const opts = { skipOutbound: '3306', skipInbound: '9000-9010', opaque: '5000-5010, 25' };
const expected = {
  [ANNOTATIONS.inject]: 'enabled',
  [ANNOTATIONS.skipOutbound]: '3306',
  [ANNOTATIONS.skipInbound]: '9000-9010',
  [ANNOTATIONS.opaque]: '25,5000-5010',
};
const meshKeys = (ann: Record<string, string> | undefined) =>
  Object.fromEntries(Object.entries(ann ?? {}).filter(([k]) => k.startsWith('mesh-agent.io/')));

/** Every input line appears, in order, in the output; each extra output line is an added annotation line. */
function assertOnlyAnnotationLinesAdded(t: any, input: string, output: string) {
  const inLines = input.split('\n');
  const extra: string[] = [];
  let i = 0;
  for (const line of output.split('\n')) {
    if (i < inLines.length && line === inLines[i]) i++;
    else extra.push(line);
  }
  t.is(i, inLines.length, `input line ${i + 1} missing from output: ${JSON.stringify(inLines[i])}`);
  for (const line of extra) t.regex(line, /^\s*(mesh-agent\.io\/[a-z-]+: .+|annotations:|metadata:)$/);
}

/** go-yaml v2 as kubectl reads with it: YAML 1.1 without base-60 numbers, timestamps as strings. */
const kubectlReads = (text: string) => parse(text, { version: '1.1', intAsBigInt: true, customTags: (tags) => tags.filter((x: any) => x.tag !== 'tag:yaml.org,2002:timestamp' && x.format !== 'TIME') });

const templateAnnotations = (o: any) => o.spec.template.metadata?.annotations;

test('deployment: annotations on the pod template, comments and every other line kept byte for byte', (t) => {
  const input = fixture('deployment.yaml');
  const r = injectYaml(input, opts, 'deployment.yaml');
  t.is(r.injected, 1);
  t.deepEqual(r.kinds, ['Deployment']);
  assertOnlyAnnotationLinesAdded(t, input, r.output);
  const [before] = objectsOf(input);
  const [after] = objectsOf(r.output);
  t.deepEqual(meshKeys(templateAnnotations(after)), expected);
  t.is(templateAnnotations(after)['prometheus.io/scrape'], 'true');
  t.deepEqual(after.metadata, before.metadata, 'the Deployment\'s own metadata is not the pod\'s');
  // Nothing but the annotations changed.
  delete after.spec.template.metadata.annotations;
  delete before.spec.template.metadata.annotations;
  t.deepEqual(after, before);
  for (const comment of input.match(/#.*$/gm)!) t.true(r.output.includes(comment));
});

test('multi-document: StatefulSet and CronJob injected, Service passes through untouched', (t) => {
  const input = fixture('multi.yaml');
  const r = injectYaml(input, opts, 'multi.yaml');
  t.deepEqual(r.kinds, ['StatefulSet', 'CronJob']);
  t.deepEqual(r.objects.map((o) => `${o.kind}/${o.name}/${o.injected}`), ['StatefulSet/db/true', 'Service/db/false', 'CronJob/backup/true']);
  assertOnlyAnnotationLinesAdded(t, input, r.output);
  const [sts, svc, cron] = objectsOf(r.output);
  const [, svcIn] = objectsOf(input);
  t.deepEqual(meshKeys(templateAnnotations(sts)), expected);
  t.deepEqual(svc, svcIn);
  t.deepEqual(meshKeys(cron.spec.jobTemplate.spec.template.metadata.annotations), expected);
  t.is(cron.metadata.annotations, undefined);
  t.is(r.output.split('\n---\n').length, 3, 'document separators kept');
});

test('v1 List: Job and DaemonSet items injected, ConfigMap item untouched, empty annotations filled', (t) => {
  const input = fixture('list.yaml');
  const r = injectYaml(input, opts, 'list.yaml');
  t.deepEqual(r.kinds, ['Job', 'DaemonSet']);
  const [list] = objectsOf(r.output);
  const [job, ds, cm] = list.items;
  t.deepEqual(meshKeys(templateAnnotations(job)), expected);
  t.deepEqual(meshKeys(templateAnnotations(ds)), expected);
  t.deepEqual(cm, objectsOf(input)[0].items[2]);
  t.true(r.output.includes('# empty on purpose'), 'the comment on an empty annotations: survives');
  t.true(r.output.includes('# kubectl get -o yaml prints a v1 List.'));
});

test('Pod and Namespace: annotations on their own metadata', (t) => {
  for (const [file, kind] of [['pod.yaml', 'Pod'], ['namespace.yaml', 'Namespace']]) {
    const input = fixture(file);
    const r = injectYaml(input, opts, file);
    t.deepEqual(r.kinds, [kind]);
    assertOnlyAnnotationLinesAdded(t, input, r.output);
    t.deepEqual(meshKeys(objectsOf(r.output)[0].metadata.annotations), expected);
  }
});

test('only the given port flags become annotations; values stay strings', (t) => {
  const r = injectYaml(fixture('pod.yaml'), { skipOutbound: '3306' });
  const ann = objectsOf(r.output)[0].metadata.annotations;
  t.deepEqual(ann, { [ANNOTATIONS.inject]: 'enabled', [ANNOTATIONS.skipOutbound]: '3306' });
  t.is(typeof ann[ANNOTATIONS.skipOutbound], 'string');
});

test('idempotent: injecting the output again changes nothing', (t) => {
  for (const f of ['deployment.yaml', 'multi.yaml', 'list.yaml', 'pod.yaml', 'namespace.yaml']) {
    const once = injectYaml(fixture(f), opts).output;
    t.is(injectYaml(once, opts).output, once, f);
  }
});

test('re-injecting replaces a disabled annotation instead of duplicating the key', (t) => {
  const input = 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    mesh-agent.io/inject: disabled\nspec:\n  containers: []\n';
  const out = injectYaml(input, {}).output;
  t.is(out.match(/mesh-agent\.io\/inject/g)!.length, 1);
  t.is(objectsOf(out)[0].metadata.annotations[ANNOTATIONS.inject], 'enabled');
});

test('JSON in, block YAML out', (t) => {
  const json = JSON.stringify({ apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'j' }, spec: { selector: { matchLabels: { a: 'b' } }, template: { metadata: { labels: { a: 'b', on: 'true' } }, spec: { containers: [{ name: 'c', image: 'i', ports: [{ containerPort: 80 }] }] } } } }, null, 2);
  const r = injectYaml(json, opts);
  t.false(r.output.trimStart().startsWith('{'));
  const [obj] = objectsOf(r.output);
  t.deepEqual(meshKeys(templateAnnotations(obj)), expected);
  t.is(obj.spec.template.metadata.labels.on, 'true', 'a string that looks like a boolean stays a string');
  t.is(obj.spec.template.spec.containers[0].ports[0].containerPort, 80);
});

test('YAML aliases on the way to the pod\'s annotations: the pod template gets its own copy, the anchor\'s other users stay as they were', (t) => {
  // kubectl takes anchors and aliases within a document; sharing the Deployment's annotations with its pods is a known idiom.
  const input = [
    'apiVersion: apps/v1', 'kind: Deployment', 'metadata:', '  name: x', '  annotations: &ann', '    team: a',
    'spec:', '  selector:', '    matchLabels: &l', '      app: x', '  template:', '    metadata:', '      labels: *l', '      annotations: *ann',
    '    spec:', '      containers: [{name: c, image: i}]', '',
  ].join('\n');
  const r = injectYaml(input, { opaque: '25' });
  t.deepEqual(r.kinds, ['Deployment']);
  const [d] = objectsOf(r.output);
  t.deepEqual(d.spec.template.metadata.annotations, { team: 'a', [ANNOTATIONS.inject]: 'enabled', [ANNOTATIONS.opaque]: '25' });
  t.deepEqual(d.metadata.annotations, { team: 'a' }, 'the Deployment\'s own annotations are not the pod\'s');
  t.deepEqual(d.spec.template.metadata.labels, { app: 'x' });
  t.is(injectYaml(r.output, { opaque: '25' }).output, r.output, 'idempotent');

  // Two workloads of a List sharing one pod template: both are injected.
  const list = ['apiVersion: v1', 'kind: List', 'items:', '- kind: Deployment', '  metadata: {name: a}', '  spec:', '    template: &t', '      metadata:', '        labels: {app: a}',
    '- kind: Deployment', '  metadata: {name: b}', '  spec:', '    template: *t', ''].join('\n');
  const rl = injectYaml(list, {});
  t.deepEqual(rl.kinds, ['Deployment', 'Deployment']);
  for (const item of objectsOf(rl.output)[0].items) t.is(item.spec.template.metadata.annotations[ANNOTATIONS.inject], 'enabled');
});

test('a pod template that is not a map: InjectError naming the object and the line, not the YAML library\'s path error', (t) => {
  const input = 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: ok\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  template: oops\n';
  const e = t.throws(() => injectYaml(input, {}, 'x.yaml'), { instanceOf: InjectError });
  t.is(e!.line, 11);
  t.regex(e!.message, /^x\.yaml:11: deployment "x": spec\.template is not a map/);
});

test('kubectl get -o yaml style (a sequence at its key\'s indentation): every line kept, only the annotations added', (t) => {
  const input = [
    'apiVersion: v1', 'kind: Service', 'metadata:', '  name: web', 'spec:', '  ports:', '  - name: http', '    port: 80', '    targetPort: 8080', '  selector:', '    app: web',
    '---',
    'apiVersion: apps/v1', 'kind: Deployment', 'metadata:', '  name: web', 'spec:', '  template:', '    metadata:', '      labels:', '        app: web', '    spec:', '      containers:',
    '      - name: web', '        image: nginx', '        args:', '        - --port=8080', '        ports:', '        - containerPort: 8080', '',
  ].join('\n');
  const r = injectYaml(input, {});
  t.deepEqual(r.kinds, ['Deployment']);
  assertOnlyAnnotationLinesAdded(t, input, r.output);
  t.true(r.output.startsWith(input.slice(0, input.indexOf('---\n') + 4)), 'the Service byte for byte');
});

test('numbers keep the meaning kubectl (YAML 1.1) gives them: defaultMode 0644 stays octal, big integers stay exact', (t) => {
  const input = [
    'apiVersion: apps/v1', 'kind: Deployment', 'metadata:', '  name: d', '  annotations:', '    restarted: 2024-01-01T10:00:00+01:00',
    'spec:', '  template:', '    spec:', '      volumes:', '        - name: s', '          secret:', '            secretName: s', '            defaultMode: 0644',
    '        - name: c', '          configMap: {name: c, defaultMode: 0400}', '      containers:', '        - name: c', '          image: i',
    '          args: [0o17, 0b101, 10:30, 8080:80]', '          env:', '            - name: BIG', '              value: "12345678901234567890"',
    '      activeDeadlineSeconds: 12345678901234567890', '',
  ].join('\n');
  const out = injectYaml(input, {}).output;
  assertOnlyAnnotationLinesAdded(t, input, out);
  for (const line of ['            defaultMode: 0644', '          configMap: {name: c, defaultMode: 0400}', '      activeDeadlineSeconds: 12345678901234567890', '    restarted: 2024-01-01T10:00:00+01:00']) {
    t.true(out.split('\n').includes(line), `${line.trim()} kept as written:\n${out}`);
  }
  // As kubectl reads them, input and output agree but for the annotation added.
  const after = kubectlReads(out);
  t.is(after.spec.template.spec.volumes[0].secret.defaultMode, 420n, '0644 is 420');
  delete after.spec.template.metadata;
  t.deepEqual(after, kubectlReads(input));
});

test('JSON in: strings that YAML 1.1 (kubectl\'s reader) takes for booleans or numbers stay quoted', (t) => {
  // sigs.k8s.io/yaml reads with go-yaml v2: a plain `on`, `y` or `1_000` is a bool or an int there, and a
  // label or annotation holding one fails `kubectl apply` (must be a string).
  const values = ['on', 'off', 'yes', 'no', 'y', 'N', 'True', '1_000', '685_230.15', '0x_1F', '0o17', '2001-01-01', '<<', 'plain'];
  const labels = Object.fromEntries(values.map((v, i) => [`l${i}`, v]));
  const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', labels, annotations: { y: 'n' } }, spec: { containers: [{ name: 'c', image: 'i', args: values }] } };
  const r = injectYaml(JSON.stringify(pod), {});
  for (const [how, read] of [['kubectl', kubectlReads], ['YAML 1.1', (x: string) => parse(x, { version: '1.1' })], ['YAML 1.2', parse]] as const) {
    const back = read(r.output);
    t.deepEqual(back.metadata.labels, labels, `labels as ${how} reads them`);
    t.deepEqual(back.spec.containers[0].args, values, `args as ${how} reads them`);
    t.is(back.metadata.annotations.y, 'n', `annotations as ${how} reads them`);
  }
  t.regex(r.output, /^ {4}l13: plain$/m, 'an unambiguous string is still printed plain');
  // YAML written in flow style: a plain scalar stays plain, meaning to kubectl what it meant before.
  t.regex(injectYaml('{kind: Pod, metadata: {name: p, labels: {a: on}}}\n', {}).output, /^ {4}a: on$/m);
});

test('every injected fixture still validates against the Kubernetes schemas', async (t) => {
  for (const f of ['deployment.yaml', 'multi.yaml', 'list.yaml', 'pod.yaml', 'namespace.yaml']) {
    for (const obj of objectsOf(injectYaml(fixture(f), opts).output)) {
      t.deepEqual(await validateObject(obj), [], `${f} ${obj.kind}`);
    }
  }
});

test('bad YAML: error names the source and the line', (t) => {
  const e = t.throws(() => injectYaml(fixture('bad.yaml'), {}, 'bad.yaml'), { instanceOf: InjectError });
  t.is(e!.source, 'bad.yaml');
  t.true(e!.line >= 5 && e!.line <= 6, `line ${e!.line}`);
  t.regex(e!.message, /^bad\.yaml:\d+: \S/);
  const e2 = t.throws(() => injectYaml('kind: Pod\nmetadata:\n  name: a\n  name: b\n', {}, 'dup.yaml'), { instanceOf: InjectError });
  t.is(e2!.line, 4);
});

test('--opaque-ports takes container port names, as Linkerd\'s annotation does: kept as names, numbers normalized', (t) => {
  const out = injectYaml(fixture('pod.yaml'), { opaque: 'mysql, 5001,5000 ,nats,mysql' }).output;
  t.is(parse(out).metadata.annotations[ANNOTATIONS.opaque], '5000-5001,mysql,nats');
  t.is(parse(injectYaml(fixture('pod.yaml'), { opaque: 'mysql' }).output).metadata.annotations[ANNOTATIONS.opaque], 'mysql');
  t.throws(() => injectYaml(fixture('pod.yaml'), { opaque: 'my_sql' }), { message: /^--opaque-ports: "my_sql" is not a port number, range or container port name: port names are lowercase IANA_SVC_NAME \(at most 15 characters of a-z, 0-9 and -, with at least one letter, no -- and no - at either end\)$/ });
  t.throws(() => injectYaml(fixture('pod.yaml'), { opaque: 'mysql, HTTP' }), { message: /^--opaque-ports: "HTTP" is not a port number, range or container port name: port names are lowercase IANA_SVC_NAME .*; did you mean "http"\?$/ });
  t.throws(() => injectYaml(fixture('pod.yaml'), { opaque: 'mysql-server-port' }), { message: /^--opaque-ports: "mysql-server-port" is not .*at most 15 characters/ });
  t.throws(() => injectYaml(fixture('pod.yaml'), { skipInbound: 'mysql' }), { message: /--skip-inbound-ports: .*"mysql"/ }, 'skip lists go to the kernel: numbers only');
});

test('bad port flag values are rejected before any input is read', (t) => {
  t.throws(() => injectYaml('kind: Pod\n', { skipOutbound: '70000' }), { message: /--skip-outbound-ports: .*outside 1-65535/ });
  t.throws(() => injectYaml('kind: Pod\n', { opaque: '10-5' }), { message: /--opaque-ports/ });
  t.throws(() => injectYaml('kind: Pod\n', { skipInbound: 'http' }), { message: /--skip-inbound-ports/ });
  // More ranges than the datapath holds: the agent would refuse the annotation.
  const many = '1,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31,33';
  for (const [o, flag] of [[{ skipOutbound: many }, '--skip-outbound-ports'], [{ skipInbound: many }, '--skip-inbound-ports']] as const) {
    t.throws(() => injectYaml('kind: Pod\n', o), { message: new RegExp(`^${flag}: .*17 separate ranges, the datapath holds 16`) });
  }
  // The opaque list stays in the proxy, which holds any number (annotations.ts takes it so too).
  t.is(parse(injectYaml('kind: Pod\n', { opaque: many }).output).metadata.annotations[ANNOTATIONS.opaque], many);
});

test('CLI: file in, YAML out, linkerd-style summary on stderr', (t) => {
  const r = runCli(['inject', '--skip-outbound-ports=3306', 'test/fixtures/manifests/multi.yaml']);
  t.is(r.status, 0, r.stderr);
  t.is(r.stdout, injectYaml(fixture('multi.yaml'), { skipOutbound: '3306' }).output);
  t.deepEqual(r.stderr.trim().split('\n'), ['statefulset "db" injected', 'service "db" skipped', 'cronjob "backup" injected']);
});

test('CLI: stdin with -', (t) => {
  const r = runCli(['inject', '--opaque-ports', '5432', '-'], fixture('pod.yaml'));
  t.is(r.status, 0, r.stderr);
  t.is(parse(r.stdout).metadata.annotations[ANNOTATIONS.opaque], '5432');
});

test('CLI: bad YAML exits 1 with file:line on stderr and nothing on stdout', (t) => {
  const r = runCli(['inject', 'test/fixtures/manifests/bad.yaml']);
  t.is(r.status, 1);
  t.is(r.stdout, '');
  t.regex(r.stderr, /^mesh-agent inject: test\/fixtures\/manifests\/bad\.yaml:\d+: .+\n$/);
});

test('CLI: bad port flag exits 1 with a clear message', (t) => {
  const r = runCli(['inject', '--skip-inbound-ports', '80,abc', 'test/fixtures/manifests/pod.yaml']);
  t.is(r.status, 1);
  t.is(r.stdout, '');
  t.regex(r.stderr, /--skip-inbound-ports: invalid port list "80,abc": bad token "abc"/);
});

test('joinYamlStreams: one YAML stream from several inputs, a --- between them unless the next starts with one', (t) => {
  t.is(joinYamlStreams(['kind: A\n', 'kind: B\n']), 'kind: A\n---\nkind: B\n');
  t.is(joinYamlStreams(['kind: A', '---\nkind: B\n']), 'kind: A\n---\nkind: B\n', 'a missing last newline is added, an existing --- kept');
  t.is(joinYamlStreams(['', 'kind: A\n', '  \n']), 'kind: A\n', 'empty inputs add nothing');
  t.is(joinYamlStreams(['kind: A\n', '--- # second\nkind: B\n']), 'kind: A\n--- # second\nkind: B\n');
  t.deepEqual(objectsOf(joinYamlStreams(['kind: A\n---\nkind: B\n', 'kind: C\n'])).map((o) => o.kind), ['A', 'B', 'C']);
});

test('CLI: a directory is read as linkerd inject and kubectl apply -f read one: its .yaml, .yml and .json files, recursively, in name order', (t) => {
  const dir = testTempDir(t);
  mkdirSync(path.join(dir, 'sub'));
  writeFileSync(path.join(dir, 'b-deploy.yml'), fixture('deployment.yaml'));
  writeFileSync(path.join(dir, 'a-pod.yaml'), fixture('pod.yaml'));
  writeFileSync(path.join(dir, 'sub', 'ns.json'), JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } }));
  writeFileSync(path.join(dir, 'README.md'), 'not a manifest: {{');
  const r = runCli(['inject', '--opaque-ports', '5432', dir]);
  t.is(r.status, 0, r.stderr);
  const objs = objectsOf(r.stdout);
  t.deepEqual(objs.map((o) => o.kind), ['Pod', 'Deployment', 'Namespace']);
  t.is(objs[0].metadata.annotations[ANNOTATIONS.opaque], '5432');
  t.is(objs[1].spec.template.metadata.annotations[ANNOTATIONS.inject], 'enabled');
  t.is(objs[2].metadata.annotations[ANNOTATIONS.inject], 'enabled');
  t.is(r.stderr.trim().split('\n').length, 3, r.stderr);
  // The same files named one by one give the same stream.
  const files = runCli(['inject', '--opaque-ports', '5432', path.join(dir, 'a-pod.yaml'), path.join(dir, 'b-deploy.yml'), path.join(dir, 'sub', 'ns.json')]);
  t.is(files.status, 0, files.stderr);
  t.is(files.stdout, r.stdout);
});

test('CLI: one bad file in a directory prints nothing at all (no half-applied directory) and names the file and line', (t) => {
  const dir = testTempDir(t);
  writeFileSync(path.join(dir, 'a.yaml'), fixture('pod.yaml'));
  writeFileSync(path.join(dir, 'b.yaml'), fixture('bad.yaml'));
  const r = runCli(['inject', dir]);
  t.is(r.status, 1);
  t.is(r.stdout, '');
  t.regex(r.stderr, new RegExp(`^mesh-agent inject: ${path.join(dir, 'b.yaml').replace(/[.]/g, '\\.')}:\\d+: .+\\n$`));
});

test('CLI: a path that does not exist, or an empty directory, is refused naming it and what to give', (t) => {
  const missing = runCli(['inject', 'test/fixtures/manifests/nope.yaml']);
  t.is(missing.status, 1);
  t.is(missing.stdout, '');
  t.is(missing.stderr, 'mesh-agent inject: test/fixtures/manifests/nope.yaml: no such file or directory; give a manifest file, a directory of them, an http(s) URL or - for stdin\n');
  const dir = testTempDir(t);
  const empty = runCli(['inject', dir]);
  t.is(empty.status, 1);
  t.is(empty.stderr, `mesh-agent inject: ${dir}: no .yaml, .yml or .json file in this directory or below it\n`);
});

test('CLI: - given twice is refused before reading (stdin can be read once), naming the fix', (t) => {
  const r = runCli(['inject', '-', 'test/fixtures/manifests/pod.yaml', '-'], fixture('pod.yaml'));
  t.is(r.status, 1);
  t.is(r.stdout, '');
  t.is(r.stderr, 'mesh-agent inject: - is given twice: stdin can be read only once; save the second manifest to a file and pass its path\n');
});

test('CLI: an unreadable manifest in a directory (a broken symbolic link) is refused naming it, not with Node\'s error text', (t) => {
  const dir = testTempDir(t);
  writeFileSync(path.join(dir, 'a.yaml'), fixture('pod.yaml'));
  symlinkSync(path.join(dir, 'gone.yaml'), path.join(dir, 'b.yaml'));
  const r = runCli(['inject', dir]);
  t.is(r.status, 1);
  t.is(r.stdout, '');
  t.is(r.stderr, `mesh-agent inject: ${path.join(dir, 'b.yaml')}: a symbolic link to a file that does not exist; remove the link or point it at a manifest\n`);
});

test('CLI: an http URL is fetched (redirects followed, as for a raw GitHub link); an error answer is refused with its status', async (t) => {
  const server = http.createServer((req, res) => {
    if (req.url === '/old') res.writeHead(302, { location: '/app.yaml' }).end();
    else if (req.url === '/app.yaml') res.end(fixture('deployment.yaml'));
    else res.writeHead(404).end('not here');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const ok = await runCliAsync(['inject', `${base}/old`]);
  t.is(ok.code, 0, ok.stderr);
  t.is(ok.stdout, injectYaml(fixture('deployment.yaml'), {}).output);
  t.regex(ok.stderr, /^deployment "\S+" injected\n$/);
  const gone = await runCliAsync(['inject', `${base}/missing.yaml`]);
  t.is(gone.code, 1);
  t.is(gone.stdout, '');
  t.is(gone.stderr, `mesh-agent inject: ${base}/missing.yaml: the server answered HTTP 404; check the URL\n`);
  await new Promise<void>((r) => server.close(() => r()));
  const refused = await runCliAsync(['inject', `${base}/app.yaml`]);
  t.is(refused.code, 1);
  t.is(refused.stdout, '');
  t.regex(refused.stderr, /^mesh-agent inject: http:\/\/127\.0\.0\.1:\d+\/app\.yaml: could not fetch it \(connect ECONNREFUSED [^)]+\); check the URL, or download the file and pass its path\n$/);
});

test('CLI: a URL asked over https is not followed to http, and a body past 64 MB is cut, each refused saying why', async (t) => {
  const now = Date.now();
  const validity = { notBefore: new Date(now - 60_000), notAfter: new Date(now + 3_600_000) };
  const ca = await createTrustAnchor({ trustDomain: 'cluster.local', ...validity });
  const cert = await issueServingCertificate(ca, { ips: ['127.0.0.1'], ...validity });
  const plain = http.createServer((req, res) => {
    if (req.url === '/big.yaml') {
      // Streams on: 65 MB of comment lines, more than any manifest.
      const line = `# ${'x'.repeat(1021)}\n`;
      let left = 65 * 1024;
      const more = () => {
        while (left > 0) {
          left--;
          if (!res.write(line)) return void res.once('drain', more);
        }
        res.end();
      };
      more();
    } else res.end(fixture('deployment.yaml'));
  });
  await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
  const plainUrl = `http://127.0.0.1:${(plain.address() as AddressInfo).port}`;
  const secure = https.createServer({ cert: cert.certPem, key: cert.keyPem }, (_req, res) => res.writeHead(302, { location: `${plainUrl}/app.yaml` }).end());
  await new Promise<void>((r) => secure.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    plain.closeAllConnections();
    plain.close();
    secure.close();
  });
  const dir = testTempDir(t);
  const caFile = path.join(dir, 'ca.crt');
  writeFileSync(caFile, ca.certPem);
  const secureUrl = `https://127.0.0.1:${(secure.address() as AddressInfo).port}/app.yaml`;
  const down = await runCliAsync(['inject', secureUrl], { NODE_EXTRA_CA_CERTS: caFile });
  t.is(down.code, 1, down.stderr);
  t.is(down.stdout, '');
  t.is(down.stderr, `mesh-agent inject: ${secureUrl}: could not fetch it (it redirects to ${plainUrl}/app.yaml, which is not https); check the URL, or download the file and pass its path\n`);
  const big = await runCliAsync(['inject', `${plainUrl}/big.yaml`]);
  t.is(big.code, 1, big.stderr);
  t.is(big.stdout, '');
  t.regex(big.stderr, /could not fetch it \(it is larger than 64 MB\)/);
});

/** The CLI as a child process without blocking this one's loop (the URL test serves from it). */
function runCliAsync(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--disable-warning=ExperimentalWarning', meshBin(), ...args], { cwd: ROOT, timeout: 30_000, env: { ...process.env, ...env }, maxBuffer: 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
    });
  });
}
