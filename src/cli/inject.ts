// `mesh-agent inject [FILE|-]`: annotate workloads for the mesh, YAML in, YAML out.
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { injectYaml, injectAnnotations, type InjectOptions } from '../k8s/inject.ts';

export function registerInject(program: Command) {
  program
    .command('inject')
    .description('add the mesh-agent annotations to the pod templates in Kubernetes YAML or JSON and print the result')
    .argument('[file]', 'manifest file, or - for stdin', '-')
    .option('--skip-outbound-ports <ports>', 'ports the pods connect to directly, e.g. 3306,5000-5010')
    .option('--skip-inbound-ports <ports>', 'ports of these pods that clients reach directly')
    .option('--opaque-ports <ports>', 'ports forwarded without protocol detection')
    .action((file: string, o: { skipOutboundPorts?: string; skipInboundPorts?: string; opaquePorts?: string }) => {
      const opts: InjectOptions = { skipOutbound: o.skipOutboundPorts, skipInbound: o.skipInboundPorts, opaque: o.opaquePorts };
      injectAnnotations(opts); // bad flags fail before reading a possibly endless stdin
      const text = readFileSync(file === '-' ? 0 : file, 'utf8');
      let result;
      try {
        result = injectYaml(text, opts, file === '-' ? '<stdin>' : file);
      } catch (e) {
        // The error already names file and line; keep main's "mesh-agent:" prefix off it.
        process.stderr.write(`mesh-agent inject: ${(e as Error).message}\n`);
        process.exit(1);
      }
      process.stdout.write(result.output);
      for (const obj of result.objects) {
        process.stderr.write(`${obj.kind.toLowerCase()} "${obj.name}" ${obj.injected ? 'injected' : 'skipped'}\n`);
      }
    });
}
