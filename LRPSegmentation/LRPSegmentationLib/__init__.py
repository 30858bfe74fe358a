"""LRPSegmentationLib: Qt-free core of the LRPSegmentation Slicer extension.

A 3D U-Net for six-modality ISLES 2017 stroke lesion segmentation, and the pieces
around it (case I/O, synthetic cases, training, prediction, filtered LRP). Nothing
here imports Slicer or Qt.
"""

__version__ = "0.1.0"
