"""Attention layers in both frameworks and the porting of their weights.

:mod:`.vocabulary` is the contract's view of a layer (``LayerConfig``, weight names, layouts);
:mod:`.weights` is :func:`xattn.port_weights`; :mod:`.flax_layer` and :mod:`.torch_layer` hold
``FlaxAttention``/``TorchAttention`` and each framework's adapters (imported only when a layer of
that framework is handed over); :mod:`.check` is :func:`xattn.check_layers`.
"""
