"""The review plane's browser bridge (ChatGPT over Playwright)."""
