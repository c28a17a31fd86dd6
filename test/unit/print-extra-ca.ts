/**
 * A --require hook for test/unit/startup-bundle.test.ts: prints the CA variables the process
 * started with (to stderr), to show where weftd's shebang moved NODE_EXTRA_CA_CERTS. Not a test.
 */
process.stderr.write(`WEFT_EXTRA_CA_CERTS=${process.env.WEFT_EXTRA_CA_CERTS} NODE_EXTRA_CA_CERTS=${process.env.NODE_EXTRA_CA_CERTS}\n`);
