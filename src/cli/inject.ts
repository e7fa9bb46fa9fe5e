// `mesh-agent inject [FILE|DIR|URL|-]...`: annotate workloads for the mesh, YAML in, YAML out.
import type { Command } from 'commander';
import { injectYaml, injectAnnotations, type InjectOptions, type InjectResult } from '../k8s/inject.ts';
import { joinYamlStreams, readManifestInputs } from './manifest-inputs.ts';

export function registerInject(program: Command) {
  program
    .command('inject')
    .description('add the mesh-agent annotations to the pod templates in Kubernetes YAML or JSON and print the result')
    .argument('[inputs...]', 'manifest files, directories (their .yaml, .yml and .json files, recursively), http(s) URLs, or - for stdin (the default)')
    .option('--skip-outbound-ports <ports>', 'ports the pods connect to directly, e.g. 3306,5000-5010')
    .option('--skip-inbound-ports <ports>', 'ports of these pods that clients reach directly')
    .option('--opaque-ports <ports>', 'ports forwarded without protocol detection')
    .action(async (inputs: string[], o: { skipOutboundPorts?: string; skipInboundPorts?: string; opaquePorts?: string }) => {
      const opts: InjectOptions = { skipOutbound: o.skipOutboundPorts, skipInbound: o.skipInboundPorts, opaque: o.opaquePorts };
      injectAnnotations(opts); // bad flags fail before reading a possibly endless stdin
      // Everything is read and checked before anything is printed: one bad file leaves stdout
      // empty, so `| kubectl apply -f -` never applies half of a directory.
      const results: InjectResult[] = [];
      try {
        for (const input of await readManifestInputs(inputs.length > 0 ? inputs : ['-'])) results.push(injectYaml(input.text, opts, input.source));
      } catch (e) {
        // The error already names the file (and line); keep main's "mesh-agent:" prefix off it.
        process.stderr.write(`mesh-agent inject: ${(e as Error).message}\n`);
        process.exit(1);
      }
      process.stdout.write(joinYamlStreams(results.map((r) => r.output)));
      for (const obj of results.flatMap((r) => r.objects)) {
        process.stderr.write(`${obj.kind.toLowerCase()} "${obj.name}" ${obj.injected ? 'injected' : 'skipped'}\n`);
      }
    });
}
