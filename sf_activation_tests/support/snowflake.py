"""fakesnow's server, kept as the function it is.

`fakesnow.server()` imports its own submodule `fakesnow.server` when first called, which
then replaces the function on the package: a second call in one test process gets the
module and fails ("'module' object is not callable"). Importing this module keeps the
function; import it at a test module's top, before any call.
"""

from __future__ import annotations

import fakesnow

fake_snowflake_server = fakesnow.server
