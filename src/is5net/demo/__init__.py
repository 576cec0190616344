"""The demo wing: the paper's result in miniature, on data it makes itself.

- :mod:`~is5net.demo.synthetic`: DIS-like photos with their GT, and a simulated SAM;
- :mod:`~is5net.demo.experiment`: the one runner (schedules as training settings; data, train, score);
- :mod:`~is5net.demo.miniature`: ``is5net demo`` (coarse mask / IS-Net / IS5Net) and its schedules;
- :mod:`~is5net.demo.ablation`: ``--ablation``, the paper's input ablation on the same schedule;
- :mod:`~is5net.demo.highres`: ``--highres``, the image / box / tiles regions at full resolution;
- :mod:`~is5net.demo.tables`, :mod:`~is5net.demo.figures`: what the runs write.
"""
