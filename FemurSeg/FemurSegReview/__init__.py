"""``femurseg review``: check and correct a femur segmentation in the browser.

Slicer's own MRML scene, views and Segment Editor effects run in a local web server through
Kitware's trame-slicer (the ``[review]`` extra). :mod:`.session` holds what a review works on and
saves (core only), :mod:`.server` the web app (the only module that imports trame), and
:mod:`.command` the ``femurseg review`` command, which ``femurseg`` finds through the
``femurseg.commands`` entry point: the core never imports this package.
"""
