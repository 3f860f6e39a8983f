import { authorizeTxn } from "../acl/index.js";
import type { CatalogHandlers } from "../generated/sluice/v1/Catalog.js";
import type { Check__Output } from "../generated/sluice/v1/Check.js";
import { checkToWire, nodeToWire, serviceToWire } from "../proto/index.js";
import { type CheckStatus, type Op, queries } from "../state/index.js";
import { type BrokerDeps, resolveCall, unary } from "./context.js";
import { InvalidArgumentError } from "./errors.js";

const orUndefined = (v: string | undefined | null): string | undefined =>
  v === "" || v == null ? undefined : v;

function checkOp(c: Check__Output, node: string, serviceId: string | undefined): Op {
  return {
    op: "check.register",
    check: {
      Node: c.node || node,
      CheckID: c.check_id,
      Name: orUndefined(c.name),
      Status: (orUndefined(c.status) as CheckStatus | undefined) ?? undefined,
      Notes: c.notes,
      Output: c.output,
      ServiceID: c.service_id || serviceId || "",
    },
  };
}

/** sluice.v1.Catalog: register/deregister, check updates and health reads, ACL-checked. */
export function catalogService(deps: BrokerDeps): CatalogHandlers {
  const commit = async (md: Parameters<typeof resolveCall>[1], txn: Op[]) => {
    const { authorizer } = await resolveCall(deps, md);
    authorizeTxn(authorizer, deps.store.root, txn);
    return { index: (await deps.store.commit(txn)).index };
  };
  return {
    Register: unary(async (req, call) => {
      if (!req.node?.node) throw new InvalidArgumentError("node.node", "a node name is required");
      const n = req.node;
      const txn: Op[] = [
        {
          op: "node.register",
          node: {
            Node: n.node,
            ID: orUndefined(n.id),
            Address: n.address,
            Datacenter: orUndefined(n.datacenter),
            TaggedAddresses: n.tagged_addresses,
            Meta: n.meta,
          },
        },
      ];
      const s = req.service;
      if (s?.id || s?.service) {
        txn.push({
          op: "service.register",
          service: {
            Node: n.node,
            ID: s.id || s.service,
            Service: s.service,
            Tags: s.tags,
            Address: s.address,
            Port: s.port,
            Meta: s.meta,
            Kind: s.kind,
          },
        });
      }
      // As in Consul's catalog API, a check without a ServiceID is a node-level check.
      for (const c of req.checks) txn.push(checkOp(c, n.node, undefined));
      return commit(call.metadata, txn);
    }),
    Deregister: unary(async (req, call) => {
      if (!req.node) throw new InvalidArgumentError("node", "a node name is required");
      const op: Op = req.check_id
        ? { op: "check.deregister", node: req.node, checkId: req.check_id }
        : req.service_id
          ? { op: "service.deregister", node: req.node, serviceId: req.service_id }
          : { op: "node.deregister", node: req.node };
      return commit(call.metadata, [op]);
    }),
    UpdateCheck: unary(async (req, call) =>
      commit(call.metadata, [
        {
          op: "check.status",
          node: req.node,
          checkId: req.check_id,
          status: req.status as CheckStatus,
          output: orUndefined(req.output),
        },
      ]),
    ),
    ListServices: unary(async (_req, call) => {
      const { authorizer } = await resolveCall(deps, call.metadata);
      const root = deps.publisher.state;
      const services: Record<string, { tags: string[] }> = {};
      for (const name of queries.serviceNames(root)) {
        const tags = new Set<string>();
        let shown = "";
        for (const svc of queries.serviceInstances(root, name)) {
          shown ||= svc.Service;
          for (const t of svc.Tags) tags.add(t);
        }
        if (authorizer.allows("service", shown, "read")) services[shown] = { tags: [...tags] };
      }
      return { index: root.index, services };
    }),
    ServiceHealth: unary(async (req, call) => {
      if (!req.service) throw new InvalidArgumentError("service", "a service name is required");
      const { authorizer } = await resolveCall(deps, call.metadata);
      const root = deps.publisher.state;
      const instances = [];
      for (const svc of queries.serviceInstances(root, req.service)) {
        const node = queries.getNode(root, svc.Node);
        if (!node) continue;
        if (
          !authorizer.allows("service", svc.Service, "read") ||
          !authorizer.allows("node", svc.Node, "read")
        )
          continue;
        if (req.tag && !svc.Tags.includes(req.tag)) continue;
        const checks = queries.instanceChecks(root, svc.Node, svc.ID);
        if (req.passing_only && checks.some((c) => c.Status !== "passing")) continue;
        instances.push({
          node: nodeToWire(node),
          service: serviceToWire(svc),
          checks: checks.map(checkToWire),
        });
      }
      return { index: root.index, instances };
    }),
    ListNodes: unary(async (_req, call) => {
      const { authorizer } = await resolveCall(deps, call.metadata);
      const root = deps.publisher.state;
      const nodes = [...root.nodes.values()]
        .filter((n) => authorizer.allows("node", n.Node, "read"))
        .map(nodeToWire);
      return { index: root.index, nodes };
    }),
  };
}
