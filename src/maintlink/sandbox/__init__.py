"""The sandbox: a simulated maintenance system (CMMS) that maintlink talks to over real HTTP.

`SandboxState` holds its data, credentials and fault switches; `create_sandbox_app` serves them;
`maintlink.sandbox.server` runs it and `maintlink.sandbox.control` drives a running one.
"""

from maintlink.sandbox.app import create_sandbox_app
from maintlink.sandbox.state import DEMO_API_KEY, SandboxError, SandboxState

__all__ = ["DEMO_API_KEY", "SandboxError", "SandboxState", "create_sandbox_app"]
