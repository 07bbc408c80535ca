"""The built-in simulated agent (:mod:`callboard.demo.agent`) and the scripted multi-node
demo behind ``callboard demo``.

Layer: above the server (the demo runs nodes with their HTTP API); only the CLI imports it.
:mod:`callboard.demo.agent` itself depends on nothing, so ``callboard serve`` can use it.
"""
