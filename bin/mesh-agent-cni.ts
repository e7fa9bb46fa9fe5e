#!/usr/bin/env -S node --disable-warning=ExperimentalWarning
// The chained CNI plugin (docs/install.md, "The CNI plugin"): the container runtime runs it at
// every pod sandbox's ADD, DEL and CHECK. Its own entry, so it loads nothing of the agent.
import { pluginMain } from '../src/cni/plugin.ts';

await pluginMain();
