// A node-opcua server for the gemba OPC UA collector tests and benchmarks.
// Usage: node server.js --port N --pki DIR [--vars N] [--interval MS] [--accept-unknown]
//        [--user NAME:PASS] [--max-items-per-call N] [--extra-namespace] [--commands]
// Prints "READY <url>" once listening. Variables live in namespace urn:gemba:test:
//   s=Double, s=Int32, s=Boolean, s=String, s=DoubleArray (typed values, change every tick)
//   s=v0 .. s=v<N-1> (Double, every one set to the tick counter on every tick)
// With --commands, it reads commands on stdin, one a line, each answered "OK <line>" (or
// "ERR <line>: why") on stdout:
//   remove NAME   delete the variable s=NAME (its monitored items get BadNodeIdInvalid)
//   add NAME      add a Double variable s=NAME under Bulk, set on every tick like the v's
"use strict";
const path = require("path");
const {
  OPCUAServer, OPCUACertificateManager, Variant, DataType, VariantArrayType,
  MessageSecurityMode, SecurityPolicy, StatusCodes,
} = require("node-opcua");

function arg(name, def) {
  const i = process.argv.indexOf("--" + name);
  if (i < 0) return def;
  const v = process.argv[i + 1];
  return v === undefined || v.startsWith("--") ? true : v;
}

const port = Number(arg("port", 4840));
const pki = String(arg("pki", path.join(__dirname, "pki")));
const nvars = Number(arg("vars", 10));
const interval = Number(arg("interval", 100));
const acceptUnknown = arg("accept-unknown", false) === true;
const [user, pass] = String(arg("user", "gemba:secret")).split(":");
const maxItemsPerCall = Number(arg("max-items-per-call", 1000));
// registers another namespace first, so urn:gemba:test gets a different index (re-indexing)
const extraNamespace = arg("extra-namespace", false) === true;

async function main() {
  const serverCertificateManager = new OPCUACertificateManager({
    automaticallyAcceptUnknownCertificate: acceptUnknown,
    rootFolder: path.join(pki, "server"),
  });
  await serverCertificateManager.initialize();
  const userCertificateManager = new OPCUACertificateManager({
    automaticallyAcceptUnknownCertificate: acceptUnknown,
    rootFolder: path.join(pki, "user"),
  });
  await userCertificateManager.initialize();
  const server = new OPCUAServer({
    port,
    resourcePath: "/UA/gemba",
    serverCertificateManager,
    userCertificateManager,
    securityPolicies: [SecurityPolicy.None, SecurityPolicy.Basic256Sha256],
    securityModes: [MessageSecurityMode.None, MessageSecurityMode.SignAndEncrypt],
    allowAnonymous: true,
    userManager: { isValidUser: (u, p) => u === user && p === pass },
    maxConnectionsPerEndpoint: 50,
    serverCapabilities: {
      maxSessions: 50,
      maxSubscriptionsPerSession: 50,
      maxMonitoredItemsPerSubscription: 200000,
      maxMonitoredItems: 200000,
      operationLimits: {
        maxMonitoredItemsPerCall: maxItemsPerCall,
        maxNodesPerRead: maxItemsPerCall,
        maxNodesPerBrowse: maxItemsPerCall,
      },
    },
  });
  await server.initialize();
  const addressSpace = server.engine.addressSpace;
  if (extraNamespace) addressSpace.registerNamespace("urn:gemba:other");
  const ns = addressSpace.registerNamespace("urn:gemba:test");
  const folder = ns.addFolder(addressSpace.rootFolder.objects, { browseName: "Gemba", nodeId: "s=Gemba" });

  const typed = {
    Double: ns.addVariable({ componentOf: folder, browseName: "Double", nodeId: "s=Double", dataType: "Double",
      value: new Variant({ dataType: DataType.Double, value: 0 }) }),
    Int32: ns.addVariable({ componentOf: folder, browseName: "Int32", nodeId: "s=Int32", dataType: "Int32",
      value: new Variant({ dataType: DataType.Int32, value: 0 }) }),
    Boolean: ns.addVariable({ componentOf: folder, browseName: "Boolean", nodeId: "s=Boolean", dataType: "Boolean",
      value: new Variant({ dataType: DataType.Boolean, value: false }) }),
    String: ns.addVariable({ componentOf: folder, browseName: "String", nodeId: "s=String", dataType: "String",
      value: new Variant({ dataType: DataType.String, value: "sku-0" }) }),
    DoubleArray: ns.addVariable({ componentOf: folder, browseName: "DoubleArray", nodeId: "s=DoubleArray",
      dataType: "Double", valueRank: 1, arrayDimensions: [3],
      value: new Variant({ dataType: DataType.Double, arrayType: VariantArrayType.Array, value: [0, 0, 0] }) }),
  };
  const bulk = ns.addFolder(folder, { browseName: "Bulk", nodeId: "s=Bulk" });
  const vars = new Map();
  const addVar = (name) => vars.set(name, ns.addVariable({ componentOf: bulk, browseName: name, nodeId: "s=" + name,
    dataType: "Double", value: new Variant({ dataType: DataType.Double, value: 0 }) }));
  for (let i = 0; i < nvars; i++) addVar("v" + i);

  let tick = 0;
  setInterval(() => {
    tick++;
    const now = new Date();
    typed.Double.setValueFromSource(new Variant({ dataType: DataType.Double, value: tick + 0.5 }), StatusCodes.Good, now);
    typed.Int32.setValueFromSource(new Variant({ dataType: DataType.Int32, value: tick }), StatusCodes.Good, now);
    typed.Boolean.setValueFromSource(new Variant({ dataType: DataType.Boolean, value: tick % 2 === 0 }), StatusCodes.Good, now);
    typed.String.setValueFromSource(new Variant({ dataType: DataType.String, value: "sku-" + (tick % 3) }), StatusCodes.Good, now);
    typed.DoubleArray.setValueFromSource(new Variant({ dataType: DataType.Double, arrayType: VariantArrayType.Array,
      value: [tick, tick + 1, tick + 2] }), StatusCodes.Good, now);
    const v = new Variant({ dataType: DataType.Double, value: tick });
    for (const x of vars.values()) x.setValueFromSource(v, StatusCodes.Good, now);
  }, interval);

  await server.start();
  process.stdout.write("READY " + server.getEndpointUrl() + "\n");
  // only when asked: a server started in the background of a terminal would be stopped reading it
  const command = (line) => {
    const [cmd, name] = line.trim().split(/\s+/);
    if (cmd === "remove" && vars.has(name)) {
      addressSpace.deleteNode(vars.get(name));
      vars.delete(name);
    } else if (cmd === "add" && name && !vars.has(name)) {
      addVar(name);
    } else {
      throw new Error("unknown command or name");
    }
  };
  if (arg("commands", false) === true) {
    require("readline").createInterface({ input: process.stdin }).on("line", (line) => {
      try {
        command(line);
        process.stdout.write("OK " + line + "\n");
      } catch (err) {
        process.stdout.write("ERR " + line + ": " + err.message + "\n");
      }
    });
  }
  const stop = async () => { await server.shutdown(0); process.exit(0); };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => { process.stderr.write("server failed: " + (err && err.stack || err) + "\n"); process.exit(1); });
