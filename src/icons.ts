import { LabIcon } from '@jupyterlab/ui-components';

/** A head node linked to three workers: our mark for a Ray cluster. */
const rayClustersSvg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 16 16">
  <g class="jp-icon3" fill="none" stroke="#616161" stroke-width="1.2">
    <line x1="8" y1="8" x2="8" y2="2.5" />
    <line x1="8" y1="8" x2="3" y2="12" />
    <line x1="8" y1="8" x2="13" y2="12" />
  </g>
  <g class="jp-icon3" fill="#616161">
    <circle cx="8" cy="8" r="2.6" />
    <circle cx="8" cy="2.2" r="1.7" />
    <circle cx="2.7" cy="12.3" r="1.7" />
    <circle cx="13.3" cy="12.3" r="1.7" />
  </g>
</svg>`;

export const rayClustersIcon = new LabIcon({
  name: 'eksray-jupyter:ray-clusters',
  svgstr: rayClustersSvg
});
