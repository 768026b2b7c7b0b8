"""The review plane: review packets, reviewer backends (the ChatGPT bridge among them) and reply
parsing. Sits above the execution plane and the gates."""
