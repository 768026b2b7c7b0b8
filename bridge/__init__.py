"""The review plane's ChatGPT web bridge: drive the user's logged-in ChatGPT tab over CDP.

It knows nothing of runs, reviews or the ledger: callers pass endpoints, paths and callbacks
(``on_sent`` with the durable conversation URL, ``on_progress`` with liveness), a directory for
failure diagnostics, and get back a ``BridgeReply``, ``ReplyPending`` (sent, still coming: re-read
later) or one of the errors in ``errors``. Playwright is imported only when a browser is actually
driven, so importing this package stays cheap.

Modules point one way (no cycles): ``chatgpt`` → ``doctor`` → ``probe``/``diagnostics`` →
``selectors`` → ``session`` → ``browser``; all of them use the leaves ``errors``, ``config`` and
``pagejs``.
"""

from .browser import (
    BrowserLease,
    EndpointInfo,
    LaunchedBrowser,
    active_port_file,
    candidate_endpoints,
    find_browser_executable,
    find_endpoint,
    launch_browser,
    probe_endpoint,
)
from .chatgpt import ChatGPTBridge
from .config import LONG_THINKING, BridgeConfig, BridgeReply, Fallback, Progress
from .doctor import DoctorReport, SelectorCheck
from .errors import (
    STAGES,
    AccountChooser,
    BridgeError,
    BrowserBusy,
    BrowserNotFound,
    CloudflareChallenge,
    DeadlineExceeded,
    EndpointUnreachable,
    LoggedOut,
    ModelNotVerified,
    OptionNotFound,
    ProfileError,
    PromptTruncated,
    ReplyFailed,
    ReplyPending,
    SelectorDrift,
    SendNotCommitted,
    UsageCapReached,
)
from .probe import conversation_id, is_durable_conversation_url
from .selectors import Profile, load_profile

__all__ = [
    "LONG_THINKING",
    "STAGES",
    "AccountChooser",
    "BridgeConfig",
    "BridgeError",
    "BridgeReply",
    "BrowserBusy",
    "BrowserLease",
    "BrowserNotFound",
    "ChatGPTBridge",
    "CloudflareChallenge",
    "DeadlineExceeded",
    "DoctorReport",
    "EndpointInfo",
    "EndpointUnreachable",
    "Fallback",
    "LaunchedBrowser",
    "LoggedOut",
    "ModelNotVerified",
    "OptionNotFound",
    "Profile",
    "ProfileError",
    "Progress",
    "PromptTruncated",
    "ReplyFailed",
    "ReplyPending",
    "SelectorCheck",
    "SelectorDrift",
    "SendNotCommitted",
    "UsageCapReached",
    "active_port_file",
    "candidate_endpoints",
    "conversation_id",
    "find_browser_executable",
    "find_endpoint",
    "is_durable_conversation_url",
    "launch_browser",
    "load_profile",
    "probe_endpoint",
]
