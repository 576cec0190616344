"""Inference: one image and its boxes in, one mask per box out (the segment-anything shape: embed once, prompt many).

- :mod:`~is5net.inference.stage1`: the coarse mask: SAM, GrabCut or the user's masks, chosen by ``choose_stage1``;
- :mod:`~is5net.inference.boxes`: every way a box arrives, and its one check;
- :mod:`~is5net.inference.predictor`: ``IS5NetPredictor`` (``set_image`` once, ``predict`` many) and
  ``build_predictor`` (the one way to build it from ``PredictorOptions``);
- :mod:`~is5net.inference.regions`: the image / box / tiles regions at full resolution;
- :mod:`~is5net.inference.backends`: the refiner's runtimes (torch, ONNX Runtime, OpenVINO);
- :mod:`~is5net.inference.encoder_runtime`: stage 1's image encoder on those runtimes (``accelerate``);
- :mod:`~is5net.inference.outputs`: what a prediction becomes as a file (mask, cut-out, labels, RLE);
- :mod:`~is5net.inference.export_check`: an ONNX export checked against torch.

Nothing here knows about files of many images, commands or servers: :mod:`is5net.segment_files`,
:mod:`is5net.commands` and :mod:`is5net.serve` build on it.
"""
