"""Provenance zones: where reference lots are dense enough to model, found by HDBSCAN.

Administrative borders say nothing about where grain resembles grain; zones come from the data. Each
reference lot gets a zone or is noise (too isolated to belong to one); a new point gets the zone it
would have joined and a membership strength in [0, 1]. Zones with too few lots, and noise, fall back
to the administrative region, so every lot always has a provenance unit to be scored against.

Geography only: HDBSCAN on (lat, lon) in radians with the haversine metric, exactly as hdbscan
documents it. With embeddings (`embedding_weight > 0`): HDBSCAN on the points' 3-D positions on the
sphere scaled to `distance_scale_km` (chord length, within 0.2 % of the great-circle distance below
500 km) joined with the whitened principal components of the embeddings, so two lots are close when
they are near each other and look alike.
"""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.neighbors import BallTree
from sklearn.utils.validation import check_is_fitted

from grainproof.errors import GrainproofError
from grainproof.geo.regions import EARTH_RADIUS_KM, RegionSet, load_region_set

NOISE = -1
#: Hulls of very small or flat zones are widened by this much (degrees, ~2 km) so they show on maps.
HULL_BUFFER_DEG = 0.02


class ProvenanceZones(BaseEstimator):  # type: ignore[misc]
    """Cluster reference lots into provenance zones (sklearn-style: hyperparameters only in __init__).

    min_cluster_size: fewest lots HDBSCAN accepts as a zone.
    min_samples: HDBSCAN's density smoothing (None: min_cluster_size); larger = more noise.
    cluster_selection_method: "leaf" (default) keeps the fine, homogeneous zones at the leaves of
        HDBSCAN's tree; "eom" keeps the most persistent ones, which on a cereal belt of even density
        is one zone for the whole belt (measured: docs/geography.md).
    cluster_selection_epsilon_km: zones closer than this are merged (0: pure HDBSCAN).
    min_zone_lots: zones with fewer lots fall back to the administrative region (None: min_cluster_size).
    min_strength: a lot (reference or new) belongs to a zone only with at least this membership
        strength; weaker members count as noise.
    embedding_weight: 0 clusters on geography alone; >0 adds embedding similarity with that weight.
    distance_scale_km: with embeddings, the geographic distance that counts as much as one embedding
        standard deviation.
    embedding_components: principal components of the embeddings used (whitened).
    region_set: the administrative fallback and the land zones are clipped to.
    """

    def __init__(
        self,
        *,
        min_cluster_size: int = 30,
        min_samples: int | None = 5,
        cluster_selection_method: str = "leaf",
        cluster_selection_epsilon_km: float = 0.0,
        min_zone_lots: int | None = None,
        min_strength: float = 0.25,
        embedding_weight: float = 0.0,
        distance_scale_km: float = 50.0,
        embedding_components: int = 8,
        region_set: str = "fr-departements",
    ) -> None:
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.cluster_selection_method = cluster_selection_method
        self.cluster_selection_epsilon_km = cluster_selection_epsilon_km
        self.min_zone_lots = min_zone_lots
        self.min_strength = min_strength
        self.embedding_weight = embedding_weight
        self.distance_scale_km = distance_scale_km
        self.embedding_components = embedding_components
        self.region_set = region_set

    # --- fitting -----------------------------------------------------------------------------------

    def fit(self, lon: Any, lat: Any, embeddings: Any = None) -> ProvenanceZones:
        """Find the zones of these reference lots; `labels_` gives each lot's zone (-1: noise)."""
        import hdbscan

        self._check_hyperparameters()
        lon_array, lat_array = _coordinates(lon, lat)
        n = len(lon_array)
        if n < 2:
            raise GrainproofError(f"Provenance zones need at least 2 reference lots with coordinates; got {n}.")
        uses_embeddings = self.embedding_weight > 0 and embeddings is not None
        # Sorting by position first makes the zones independent of the order the lots came in.
        order = np.lexsort((lat_array, lon_array))
        features, metric = self._features(lon_array[order], lat_array[order], embeddings, order, fitting=True)
        self.uses_embeddings_ = uses_embeddings
        min_cluster_size = max(2, min(self.min_cluster_size, n))
        clusterer = hdbscan.HDBSCAN(
            min_cluster_size=min_cluster_size,
            min_samples=None if self.min_samples is None else max(1, min(self.min_samples, n)),
            cluster_selection_epsilon=self._epsilon(uses_embeddings),
            cluster_selection_method=self.cluster_selection_method,
            metric=metric,
            prediction_data=True,
        )
        clusterer.fit(features)
        raw = np.empty(n, dtype=np.int64)
        raw[order] = np.where(clusterer.probabilities_ >= self.min_strength, clusterer.labels_, NOISE)
        strength = np.empty(n, dtype=np.float64)
        strength[order] = clusterer.probabilities_
        core_distance = np.empty(n, dtype=np.float64)
        core_distance[order] = clusterer.prediction_data_.core_distances
        sorted_features = np.empty_like(features)
        sorted_features[order] = features

        # Public zone numbers: largest zone first, ties by westernmost lot, so reruns read the same.
        found = [label for label in np.unique(raw) if label != NOISE]
        keys = {label: (-int((raw == label).sum()), float(lon_array[raw == label].min())) for label in found}
        self._label_map = {int(label): zone for zone, label in enumerate(sorted(found, key=lambda lab: keys[lab]))}
        self._clusterer = clusterer
        self.labels_ = np.array([self._label_map.get(int(label), NOISE) for label in raw], dtype=np.int64)
        self.strengths_ = np.where(self.labels_ == NOISE, 0.0, strength)
        self.n_zones_ = len(found)
        self.noise_share_ = float((self.labels_ == NOISE).mean())
        self.zone_sizes_ = np.bincount(self.labels_[self.labels_ != NOISE], minlength=self.n_zones_)
        # A zone reaches as far as its loosest member's core distance: a new point further than that
        # from every member would not have joined the zone, whatever approximate_predict says.
        self._zone_trees = [
            BallTree(sorted_features[self.labels_ == zone], metric=metric) for zone in range(self.n_zones_)
        ]
        self.zone_reach_ = np.array(
            [float(core_distance[self.labels_ == zone].max()) for zone in range(self.n_zones_)], dtype=np.float64
        )
        self.lon_, self.lat_ = lon_array, lat_array
        self.units_ = self.assign_units(lon_array, lat_array, labels=self.labels_, strengths=self.strengths_)
        return self

    def _check_hyperparameters(self) -> None:
        if self.min_cluster_size < 2:
            raise GrainproofError(f"min_cluster_size must be at least 2; got {self.min_cluster_size}.")
        if not 0.0 <= self.min_strength <= 1.0:
            raise GrainproofError(f"min_strength must lie in [0, 1]; got {self.min_strength}.")
        if self.cluster_selection_method not in ("leaf", "eom"):
            raise GrainproofError(
                f"cluster_selection_method must be 'leaf' or 'eom'; got {self.cluster_selection_method!r}."
            )
        if self.embedding_weight < 0 or self.distance_scale_km <= 0 or self.cluster_selection_epsilon_km < 0:
            raise GrainproofError(
                "embedding_weight and cluster_selection_epsilon_km must be >= 0 and distance_scale_km > 0."
            )

    def _epsilon(self, uses_embeddings: bool) -> float:
        if uses_embeddings:
            return self.cluster_selection_epsilon_km / self.distance_scale_km
        return self.cluster_selection_epsilon_km / EARTH_RADIUS_KM

    def _features(
        self, lon: np.ndarray, lat: np.ndarray, embeddings: Any, order: np.ndarray | None, *, fitting: bool
    ) -> tuple[np.ndarray, str]:
        uses_embeddings = self.embedding_weight > 0 and embeddings is not None
        if not fitting:
            uses_embeddings = bool(self.uses_embeddings_)
            if uses_embeddings and embeddings is None:
                raise GrainproofError(
                    "These provenance zones were fitted with embeddings; give the lots' embeddings to place them."
                )
        if not uses_embeddings:
            return np.column_stack([np.radians(lat), np.radians(lon)]), "haversine"
        vectors = np.asarray(embeddings, dtype=np.float64)
        if vectors.ndim != 2 or len(vectors) != len(lon) or not np.isfinite(vectors).all():
            raise GrainproofError(
                f"Embeddings must be a finite (n_lots, dim) array with one row per lot; got shape {vectors.shape}."
            )
        if order is not None:
            vectors = vectors[order]
        if fitting:
            components = max(1, min(self.embedding_components, vectors.shape[1], len(vectors) - 1))
            self._pca = PCA(n_components=components, whiten=True, svd_solver="full").fit(vectors)
        projected = self._pca.transform(vectors) * self.embedding_weight
        return np.column_stack([_unit_sphere(lon, lat) * (EARTH_RADIUS_KM / self.distance_scale_km), projected]), (
            "euclidean"
        )

    # --- new points --------------------------------------------------------------------------------

    def predict(self, lon: Any, lat: Any, embeddings: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(zone labels, membership strengths) for new points; -1 and 0.0 where no zone is strong enough."""
        import hdbscan

        check_is_fitted(self, "labels_")
        lon_array, lat_array = _coordinates(lon, lat)
        if self.n_zones_ == 0 or len(lon_array) == 0:
            return np.full(len(lon_array), NOISE, dtype=np.int64), np.zeros(len(lon_array))
        features, _ = self._features(lon_array, lat_array, embeddings, None, fitting=False)
        raw, strength = hdbscan.approximate_predict(self._clusterer, features)
        labels = np.array([self._label_map.get(int(label), NOISE) for label in raw], dtype=np.int64)
        strength = np.asarray(strength, dtype=np.float64)
        weak = (labels == NOISE) | (strength < self.min_strength)
        for zone in np.unique(labels[~weak]):
            members = np.flatnonzero((labels == zone) & ~weak)
            distance, _ = self._zone_trees[zone].query(features[members], k=1)
            weak[members[distance[:, 0] > self.zone_reach_[zone]]] = True
        return np.where(weak, NOISE, labels), np.where(weak, 0.0, strength)

    def assign_units(
        self,
        lon: Any,
        lat: Any,
        embeddings: Any = None,
        *,
        labels: np.ndarray | None = None,
        strengths: np.ndarray | None = None,
    ) -> np.ndarray:
        """The provenance unit of each point: 'zone:<k>' in a well-populated zone, else 'region:<code>'.

        Points outside every region and every zone get 'region:?' so callers can still group them.
        """
        check_is_fitted(self, "labels_")
        lon_array, lat_array = _coordinates(lon, lat)
        if labels is None or strengths is None:
            labels, strengths = self.predict(lon_array, lat_array, embeddings)
        minimum = self.min_zone_lots if self.min_zone_lots is not None else self.min_cluster_size
        thick = np.zeros(len(labels), dtype=bool)
        zoned = labels != NOISE
        thick[zoned] = self.zone_sizes_[labels[zoned]] >= minimum
        regions = self._regions().lookup_points(lon_array, lat_array)
        units = np.array(
            [
                f"zone:{label}" if is_thick else f"region:{region if region is not None else '?'}"
                for label, is_thick, region in zip(labels.tolist(), thick.tolist(), regions.tolist(), strict=True)
            ],
            dtype=object,
        )
        return units

    # --- reporting ---------------------------------------------------------------------------------

    def _regions(self) -> RegionSet:
        return load_region_set(self.region_set)

    def zone_summary(self) -> pd.DataFrame:
        """One row per zone: lots, median position and the regions its lots come from."""
        check_is_fitted(self, "labels_")
        regions = self._regions().lookup_points(self.lon_, self.lat_)
        rows = []
        for zone in range(self.n_zones_):
            members = self.labels_ == zone
            counts = pd.Series(regions[members]).value_counts()
            rows.append(
                {
                    "zone": zone,
                    "lots": int(members.sum()),
                    "lon": float(np.median(self.lon_[members])),
                    "lat": float(np.median(self.lat_[members])),
                    "main_region": str(counts.index[0]) if len(counts) else None,
                    "regions": ";".join(str(code) for code in counts.index),
                }
            )
        return pd.DataFrame(rows, columns=["zone", "lots", "lon", "lat", "main_region", "regions"])

    def zone_polygons(self) -> gpd.GeoDataFrame:
        """Each zone as the convex hull of its lots, widened a little and clipped to land (EPSG:4326)."""
        check_is_fitted(self, "labels_")
        land = self._regions().land
        geometries = []
        for zone in range(self.n_zones_):
            members = self.labels_ == zone
            hull = shapely.convex_hull(shapely.multipoints(np.column_stack([self.lon_[members], self.lat_[members]])))
            geometries.append(shapely.intersection(shapely.buffer(hull, HULL_BUFFER_DEG), land))
        return gpd.GeoDataFrame(
            {"zone": list(range(self.n_zones_)), "lots": [int(s) for s in self.zone_sizes_]},
            geometry=geometries,
            crs="EPSG:4326",
        )


def _coordinates(lon: Any, lat: Any) -> tuple[np.ndarray, np.ndarray]:
    lon_array = np.atleast_1d(np.asarray(lon, dtype=np.float64)).ravel()
    lat_array = np.atleast_1d(np.asarray(lat, dtype=np.float64)).ravel()
    if lon_array.shape != lat_array.shape:
        raise GrainproofError(f"lon and lat have different lengths ({len(lon_array)} and {len(lat_array)}).")
    bad = ~(np.isfinite(lon_array) & np.isfinite(lat_array))
    bad |= (np.abs(lon_array) > 180) | (np.abs(lat_array) > 90)
    if bad.any():
        raise GrainproofError(
            f"{int(bad.sum())} lot(s) have missing or out-of-range coordinates (first at position "
            f"{int(np.argmax(bad))}); provenance zones need WGS84 lon/lat for every lot."
        )
    return lon_array, lat_array


def _unit_sphere(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    lon_rad, lat_rad = np.radians(lon), np.radians(lat)
    return np.column_stack([np.cos(lat_rad) * np.cos(lon_rad), np.cos(lat_rad) * np.sin(lon_rad), np.sin(lat_rad)])
