"""Attention layers in both frameworks and the porting of their weights.

:mod:`.vocabulary` is the contract's view of a layer, framework-free (``LayerConfig``, kinds,
weight names, layouts, and ``XattnLayer``: what xattn's two layers share); :mod:`.weights` is
:func:`xattn.port_weights` and picks each layer's adapter; :mod:`.flax_layer` and
:mod:`.torch_layer` hold ``FlaxAttention``/``TorchAttention`` and each framework's adapters
(imported only when a layer of that framework is handed over); :mod:`.check` is
:func:`xattn.check_layers`. Imports point one way: check -> weights -> {flax,torch}_layer -> vocabulary.
"""
