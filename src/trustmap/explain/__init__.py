"""Explainers: which parts of an input a fitted classifier relies on.

``explain(model, x, method="gradcam", target=None)`` returns an :class:`~trustmap.Attribution`
whose maps have the shape and layout of ``x``. Methods (``list_methods()``):

==========================  =====================================================================
``saliency``                gradient of the target score (``absolute``, ``times_input``)
``smoothgrad``              saliency averaged over noisy copies
``integrated_gradients``    path integral from a baseline (zero, mean, blur, noise); delta in extras
``guided_backprop``         gradient with the guided ReLU rule (torch and Keras, fused ReLUs too)
``gradcam``                 Grad-CAM; ``per_channel=True`` splits it over input channels
``hirescam``                HiResCAM: Grad-CAM with the gradient kept per position
``gradcam_pp``              Grad-CAM++
``scorecam``                Score-CAM (K masked forward passes, batched)
``ablationcam``             Ablation-CAM (channels zeroed through a hook, batched)
``guided_gradcam``          guided backprop × Grad-CAM (per channel)
``activation_max``          a regularized input maximizing a class score or a unit
``occlusion``               score drop when windows are replaced by a baseline (forward only)
``lime``                    LIME on 1D segments / 2D superpixels, batched weighted ridge (forward only)
``kernelshap``              KernelSHAP on the same features; efficiency holds (forward only)
``input_x_gradient``        gradient × input (Captum's InputXGradient)
``deconvolution``           gradient with the deconvnet ReLU rule (torch and Keras, fused ReLUs too)
``deeplift``                DeepLIFT Rescale against a baseline; summation-to-delta in extras
``deeplift_shap``           DeepLIFT averaged over a distribution of references
``gradient_shap``           expected gradients: random reference, random point on the path, noise
``lrp``                     LRP with composites (epsilon, gamma, alpha_beta, epsilon_plus_flat); torch and Keras
``feature_ablation``        score drop when a feature (segment, superpixel, your mask) is removed
``shapley_sampling``        Shapley values by permutation sampling on the same features
``tsr``                     temporal saliency rescaling of any base method (time x channel)
``extremal_mask``           smooth mask of given area(s) preserving/deleting the score (optimised)
``dynamask``                per-entry dynamic mask (fade or variable blur), optimised
==========================  =====================================================================

``trustmap.counterfactual(model, X, target, reference=X_train, y_reference=y_train)`` gives Native-Guide
counterfactuals (:mod:`trustmap.explain.counterfactual`). Facts about each method (forward-only,
synthesizes inputs, stochastic) are class attributes; ``methods_where(...)`` lists the methods that
have them.

Gradient methods differentiate the pre-softmax score (``Model.logits_t``); see each class's
docstring. ``class_average`` averages a method's maps over each class's samples (SEM, bootstrap CI).
"""

from __future__ import annotations

import sys
import types

from ..attribution import Attribution
from .base import Explainer
from .registry import REGISTRY, get_explainer, list_methods, methods_where, register
from . import gradients as _gradients  # noqa: F401  (registers the methods)
from . import cam as _cam  # noqa: F401
from . import actmax as _actmax  # noqa: F401
from . import perturbation as _perturbation  # noqa: F401
from . import lime as _lime  # noqa: F401
from . import backprop as _backprop  # noqa: F401
from . import lrp as _lrp  # noqa: F401
from . import ablation as _ablation  # noqa: F401
from . import tsr as _tsr  # noqa: F401
from . import masks as _masks  # noqa: F401
from .class_average import class_average

__all__ = ["explain", "Explainer", "REGISTRY", "get_explainer", "list_methods", "methods_where", "register", "class_average",
           "run_explain"]


def explain(model, x, method: str = "gradcam", target=None, layout=None, **params) -> Attribution:
    """Explain ``x`` with ``method``: a shortcut for ``get_explainer(method, **params).explain(...)``.

    Parameters
    ----------
    model : torch.nn.Module, keras.Model, trustmap Model, or a model file path
    x : array or tensor
        A batch, in any layout the model accepts; maps come back in the same layout and shape.
    method : str
        A registered name (``list_methods()``).
    target : None, int, or one int per sample
        ``None`` explains the predicted class.
    layout : str, optional
        Layout name of ``x`` when its shape is ambiguous (``'NLC'``, ``'NCL'``, ...).
    **params
        The method's parameters (see ``help(REGISTRY[method])`` and :doc:`/methods`).

    Returns
    -------
    Attribution
        ``maps`` with the shape and layout of ``x``, the explained ``targets``, the method's
        ``params`` and ``extras``, and the provenance (model and data fingerprints, versions).

    Raises
    ------
    InputError
        An unknown ``method`` (the message suggests the closest names) or a parameter the method
        does not take.
    UnsupportedError
        A gradient method on a forward-only (ONNX) model.
    NonFiniteError
        NaN or Inf in ``x``, in the model's scores or in the computed maps.
    LayoutError, ShapeError, TargetError
        ``x`` whose layout cannot be resolved, or a target outside the model's classes.

    Examples
    --------
    >>> import trustmap
    >>> from trustmap import datasets, zoo
    >>> test = datasets.load("mnist1d", split="test")
    >>> net = zoo.mnist1d_cnn()                     # any nn.Module, keras.Model or model file
    >>> att = trustmap.explain(net, test.X[:4], method="gradcam")
    >>> att.maps.shape, att.method
    ((4, 40), 'gradcam')
    >>> ig = trustmap.explain(net, test.X[:4], method="integrated_gradients", n_steps=16, target=3)
    """
    return get_explainer(method, **params).explain(model, x, target=target, layout=layout)


class _CallableModule(types.ModuleType):
    """``trustmap.explain`` is this package *and* the function: ``trustmap.explain(model, x, ...)``
    calls :func:`explain` whether or not the package was imported by name before."""

    def __call__(self, model, x, method: str = "gradcam", target=None, layout=None, **params) -> Attribution:
        return explain(model, x, method, target, layout, **params)


sys.modules[__name__].__class__ = _CallableModule


def __getattr__(name):
    if name == "run_explain":  # lazy: the runner imports plotting
        from .runner import run_explain

        return run_explain
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
