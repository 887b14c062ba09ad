"""The local sandbox: the sample slate, the reference Phase 5 worker and its systems, the
demo. For laptops, the demo and the tests; the production code paths never import it."""
