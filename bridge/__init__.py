"""The review plane's ChatGPT web bridge: drive the user's logged-in ChatGPT tab over CDP.

It knows nothing of runs, reviews or the ledger: callers pass endpoints, paths and an
``on_sent`` callback, and get back markdown or one of the errors in ``errors``. Playwright is
imported only when a browser is actually driven, so importing this package stays cheap.
"""

from .browser import (
    BrowserLease,
    EndpointInfo,
    LaunchedBrowser,
    candidate_endpoints,
    find_browser_executable,
    find_endpoint,
    launch_browser,
    probe_endpoint,
)
from .chatgpt import BridgeConfig, BridgeReply, ChatGPTBridge
from .doctor import DoctorReport, SelectorCheck
from .errors import (
    BridgeError,
    BrowserBusy,
    BrowserNotFound,
    CloudflareChallenge,
    DeadlineExceeded,
    EndpointUnreachable,
    LoggedOut,
    OptionNotFound,
    ProfileError,
    ReplyFailed,
    SelectorDrift,
    UsageCapReached,
)
from .selectors import Profile, load_profile

__all__ = [
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
    "LaunchedBrowser",
    "LoggedOut",
    "OptionNotFound",
    "Profile",
    "ProfileError",
    "ReplyFailed",
    "SelectorCheck",
    "SelectorDrift",
    "UsageCapReached",
    "candidate_endpoints",
    "find_browser_executable",
    "find_endpoint",
    "launch_browser",
    "load_profile",
    "probe_endpoint",
]
