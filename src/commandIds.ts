/** Ids of the commands the extension adds (palette category "Ray"). */
export const CommandIDs = {
  showClusters: 'eksray:show-clusters',
  showUsage: 'eksray:show-usage',
  newCluster: 'eksray:new-cluster',
  openDashboard: 'eksray:open-dashboard',
  openDashboardInBrowser: 'eksray:open-dashboard-in-browser',
  scaleCluster: 'eksray:scale-cluster',
  deleteCluster: 'eksray:delete-cluster',
  suspendCluster: 'eksray:suspend-cluster',
  resumeCluster: 'eksray:resume-cluster',
  keepClusterAlive: 'eksray:keep-cluster-alive',
  refresh: 'eksray:refresh-clusters'
} as const;
