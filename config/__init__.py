"""snlm's configuration: settings, the Temporal client factory, the directory settings and the inventory format.

Importing any of it has no side effect (no connection, no thread, no file read), so every part of snlm may:
the worker, the ways in (`starter/`) and the demo share the settings and the client factory, and the lab and
the engine share the inventory format (`config.inventory`, which imports nothing else of snlm). Nothing here
imports the lab, the workflows (except the contract's enums and names), the activities, the starters or the
worker.
"""
