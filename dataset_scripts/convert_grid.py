"""Convert QMUL GRID (underground_reid) to a Hugging Face dataset with the images embedded.

    python dataset_scripts/convert_grid.py /data/underground_reid --out grid_hf
    python dataset_scripts/convert_grid.py /data/underground_reid --out grid_pq --format parquet
    python dataset_scripts/convert_grid.py /data/underground_reid --push-to-hub ORG/grid

data_dir holds probe/, gallery/ and features_and_partitions.mat (the 10 shipped splits; --partitions
random uses seeded random ones). By default query/gallery are the pools; --split-id T keeps split T only.
Run with --help for every option. The reading logic is hf_reid.data.load_reid_dataset("grid", ...);
saving, pushing and the dataset card are in hf_reid.data.export.
"""

from hf_reid.data.export import run_converter

if __name__ == "__main__":
    print(run_converter("grid", description=__doc__))
