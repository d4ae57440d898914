"""Schemathesis hooks for tests/api_fuzz.rs.

`PUT /api/v1/stack` takes a TOML manifest, documented as a string under `application/toml`;
Schemathesis has no serializer for that media type, so the generated string is sent as it is,
like `text/plain`. The manifest's own rules are covered by the manifest decoder's generated
inputs (tests of lifecycle/manifest.rs and consumers/decode.rs).
"""

import schemathesis

schemathesis.serializer.alias("application/toml", "text/plain")
