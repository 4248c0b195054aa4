"""`TrajectoryBasis`: a low-rank basis of a recent weight trajectory.

The basis is fitted to the last `max_snapshots` flattened weight snapshots.
The dimension `D` of a snapshot can be large (1e5 and more), so no `D x D`
matrix is ever formed: the PCA works on the `n x n` Gram matrix of the
centered snapshots, the block power iteration on `D x k` blocks.

Coefficients are always relative to `mean`: a snapshot `x` is approximated
by `mean + decode(encode(x - mean))`.
"""

import numpy as np

from keras_hybrid.validators import check_int

METHODS = ("pca", "power", "dmd")
_ARRAYS = ("mean", "components", "_last_coeffs", "dynamics_matrix",
           "dynamics_offset", "_trend_intercept", "_trend_slope")
_SCALARS = ("dim", "active_rank", "_explained", "_num_snapshots_fitted",
            "_num_fits")


class TrajectoryBasis:
    """Low-rank basis of the last `max_snapshots` weight snapshots.

    Args:
        rank: number of directions kept. When the centered snapshots span
            fewer directions, the surplus rows of `components` are zero.
        max_snapshots: snapshots kept (oldest dropped first), at least 2.
        method: `"pca"` (Gram-matrix eigendecomposition), `"power"`
            (warm-started block power iteration) or `"dmd"` (PCA basis plus
            an exact-DMD linear model of the coefficient sequence).
        seed: seed of the random start blocks of the power iteration.
        power_iterations: iterations per `fit()` of the `"power"` method.

    Attributes (after `fit()`):
        mean: `(D,)` mean snapshot. components: `(rank, D)` orthonormal rows.
        dynamics_matrix, dynamics_offset: `"dmd"` only, `A` `(rank, rank)`
            and `b` `(rank,)` with `c_{t+1} ~= A c_t + b` for the centered
            snapshot coefficients `c_t = encode(x_t - mean)`.
    """

    def __init__(self, rank, max_snapshots=32, method="pca", seed=0,
                 power_iterations=4):
        check_int("rank", rank, 1)
        check_int("max_snapshots", max_snapshots, 2)
        check_int("power_iterations", power_iterations, 1)
        if method not in METHODS:
            raise ValueError(
                f"`method` must be one of {METHODS}. "
                f"Received: method={method!r}")
        self.rank = rank
        self.max_snapshots = max_snapshots
        self.method = method
        self.seed = int(seed)
        self.power_iterations = power_iterations
        self._snapshots = []
        for name in _ARRAYS + _SCALARS:
            setattr(self, name, None)
        self.active_rank = self._num_snapshots_fitted = self._num_fits = 0

    # ---------------------------------------------------------- snapshots
    def _check_vector(self, vector, name):
        vector = np.asarray(vector, dtype=np.float64)
        if vector.ndim != 1:
            raise ValueError(
                f"`{name}` must be a 1-D vector. Received: {name} with "
                f"shape={vector.shape}")
        if self.dim is not None and vector.shape[0] != self.dim:
            raise ValueError(
                f"`{name}` must have dimension {self.dim}. Received: {name} "
                f"with dimension {vector.shape[0]}")
        if not np.all(np.isfinite(vector)):
            raise ValueError(
                f"`{name}` must be finite. Received: {name} with non-finite "
                "entries")
        return vector

    def add(self, vector):
        """Appends one flattened weight snapshot (a 1-D float vector)."""
        vector = self._check_vector(vector, "vector")
        if self.dim is None:
            self.dim = int(vector.shape[0])
        self._snapshots.append(vector.copy())
        if len(self._snapshots) > self.max_snapshots:
            self._snapshots.pop(0)

    @property
    def num_snapshots(self):
        return len(self._snapshots)

    @property
    def fitted(self):
        return self.components is not None

    # ---------------------------------------------------------------- fit
    def fit(self):
        """Fits the basis (and the extrapolation model) to the snapshots.

        Returns:
            `self`.
        """
        n = len(self._snapshots)
        if n < 2:
            raise ValueError(
                "`fit()` needs at least 2 snapshots. "
                f"Received: num_snapshots={n}")
        x = np.stack(self._snapshots)
        mean = x.mean(axis=0)
        xc = x - mean
        if self.method == "power":
            comps, sing = self._fit_power(xc)
        else:
            comps, sing = self._fit_pca(xc)
        # Drop numerically empty directions; pad to `rank` rows with zeros.
        keep = sing > max(sing.max(initial=0.0), 1e-300) * 1e-6
        comps = comps[keep]
        if comps.shape[0]:  # Re-orthonormalize (Gram rounding errors).
            q, r = np.linalg.qr(comps.T)
            comps = (q * np.where(np.diag(r) < 0, -1.0, 1.0)).T
        signs = np.sign(comps[np.arange(len(comps)),
                              np.argmax(np.abs(comps), axis=1)])
        comps = comps * signs[:, None]
        self.active_rank = int(comps.shape[0])
        full = np.zeros((self.rank, x.shape[1]))
        full[:self.active_rank] = comps
        self.mean, self.components = mean, full
        coeffs = xc @ full.T  # (n, rank)
        total = float(np.sum(xc * xc))
        self._explained = (1.0 if total <= 0.0 else
                           float(min(np.sum(coeffs * coeffs) / total, 1.0)))
        self._last_coeffs = coeffs[-1].copy()
        self._fit_dynamics(coeffs)
        self._num_snapshots_fitted = n
        self._num_fits += 1
        return self

    def _fit_pca(self, xc):
        gram = xc @ xc.T
        eigvals, eigvecs = np.linalg.eigh(gram)
        order = np.argsort(eigvals)[::-1][:self.rank]
        eigvals = np.maximum(eigvals[order], 0.0)
        sing = np.sqrt(eigvals)
        safe = np.where(sing > 0.0, sing, 1.0)
        comps = (eigvecs[:, order].T @ xc) / safe[:, None]
        return comps, sing

    def _fit_power(self, xc):
        dim = xc.shape[1]
        block = min(self.rank + 2, dim)
        rng = np.random.default_rng([self.seed, self._num_fits])
        start = rng.standard_normal((dim, block))
        if self.components is not None and self.components.shape[1] == dim:
            warm = self.components[:self.active_rank].T
            start[:, :warm.shape[1]] = warm
        q, _ = np.linalg.qr(start)
        for _ in range(self.power_iterations):
            q, _ = np.linalg.qr(xc.T @ (xc @ q))
        # Rayleigh-Ritz: rotate the block onto the principal directions.
        _, sing, vt = np.linalg.svd(xc @ q, full_matrices=False)
        comps = (q @ vt.T).T[:self.rank]
        return comps, sing[:self.rank]

    def _fit_dynamics(self, coeffs):
        n = coeffs.shape[0]
        if self.method == "dmd":
            # Exact DMD with an affine term in the PCA coefficient space,
            # c_{t+1} = A c_t + b; the constant row is scaled like the
            # coefficients so that pinv's cut-off is scale-free.
            scale = float(np.max(np.abs(coeffs), initial=0.0)) or 1.0
            x1 = np.vstack([coeffs[:-1].T, np.full((1, n - 1), scale)])
            x2 = coeffs[1:].T
            ab = x2 @ np.linalg.pinv(x1, rcond=1e-10)
            self.dynamics_matrix = ab[:, :-1]
            self.dynamics_offset = ab[:, -1] * scale
        else:
            t = np.arange(n, dtype=np.float64)
            design = np.stack([np.ones(n), t], axis=1)
            sol, *_ = np.linalg.lstsq(design, coeffs, rcond=None)
            self._trend_intercept, self._trend_slope = sol[0], sol[1]

    # ------------------------------------------------------------ queries
    def _require_fit(self):
        if not self.fitted:
            raise ValueError("The basis is not fitted yet. Call `fit()` first.")

    def encode(self, delta):
        """Projects `delta` (a deviation from `mean`, or a weight change).

        Args:
            delta: 1-D vector of dimension `dim`.

        Returns:
            The coefficients, shape `(rank,)`.
        """
        self._require_fit()
        return self.components @ self._check_vector(delta, "delta")

    def decode(self, coeffs):
        """Maps coefficients of shape `(rank,)` back to a full vector."""
        self._require_fit()
        coeffs = np.asarray(coeffs, dtype=np.float64)
        if coeffs.shape != (self.rank,):
            raise ValueError(
                f"`coeffs` must have shape ({self.rank},). "
                f"Received: coeffs with shape={coeffs.shape}")
        return coeffs @ self.components

    def explained_variance_ratio(self):
        """Fraction in [0, 1] of the centered snapshots' variance captured.

        Returns 1.0 when the snapshots have no variance at all.
        """
        self._require_fit()
        return self._explained

    def modes(self):
        """DMD modes: `(eigenvalues, vectors)` of `dynamics_matrix`.

        Returns:
            Complex eigenvalues `(rank,)` (per-mode factor per snapshot) and
            coefficient-space modes `(rank, rank)`, one per column (`vectors[:,
            i] @ components` is mode `i` in weight space); `None` unless the
            method is `"dmd"`.
        """
        self._require_fit()
        if self.dynamics_matrix is None:
            return None
        return np.linalg.eig(self.dynamics_matrix)

    def extrapolate(self, steps):
        """Predicts the coefficients `steps` snapshots past the last fitted.

        `"dmd"` iterates `c <- A c + b` from the last snapshot's coefficients;
        `"pca"` and `"power"` evaluate a per-direction least-squares linear
        trend in time. The predicted snapshot is `mean + decode(result)`.

        Args:
            steps: non-negative integer; 0 gives the last snapshot's
                coefficients (dmd) or the trend's value there (pca/power).

        Returns:
            Coefficients of shape `(rank,)`.
        """
        self._require_fit()
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) \
                or steps < 0:
            raise ValueError(
                "`steps` must be a non-negative integer. "
                f"Received: steps={steps!r}")
        if self.dynamics_matrix is not None:
            c = self._last_coeffs.copy()
            for _ in range(int(steps)):
                c = self.dynamics_matrix @ c + self.dynamics_offset
            return c
        t = self._num_snapshots_fitted - 1 + int(steps)
        return self._trend_intercept + self._trend_slope * t

    # -------------------------------------------------------------- state
    def get_state(self):
        """The snapshots and the fitted basis as JSON-safe data."""
        state = {
            "config": {"rank": self.rank, "max_snapshots": self.max_snapshots,
                       "method": self.method, "seed": self.seed,
                       "power_iterations": self.power_iterations},
            "snapshots": [s.tolist() for s in self._snapshots],
        }
        for name in _ARRAYS:
            value = getattr(self, name)
            state[name] = None if value is None else value.tolist()
        state.update({name: getattr(self, name) for name in _SCALARS})
        return state

    def set_state(self, state):
        """Restores `get_state()` output (configuration included)."""
        self.__init__(**state["config"])
        self._snapshots = [np.asarray(s, dtype=np.float64)
                           for s in state["snapshots"]]
        for name in _ARRAYS:
            value = state[name]
            setattr(self, name, None if value is None else
                    np.asarray(value, dtype=np.float64))
        for name in _SCALARS:
            setattr(self, name, state[name])

    def memory_mb(self):
        """Megabytes held by the snapshots and the basis."""
        arrays = list(self._snapshots) + [
            a for a in (getattr(self, n) for n in _ARRAYS) if a is not None]
        return sum(a.nbytes for a in arrays) / 2**20
