/** What GET /inspector/stats and GET /api/stats answer: shared by the daemon (db/stats.ts) and the inspector page (inspector/app.ts). */

/** What GET /inspector/stats answers. */
export interface ChannelStatsReply {
  channels: {
    pattern: string;
    enabled: boolean;
    messagesLastHour: number;
    messagesTotal: number;
    avgWsAudience: number | null;
    webhookSuccessRate: number | null;
    lastMessageAt: string | null;
  }[];
  /** Messages per minute over those channels, the last 30 minutes, oldest first. */
  perMinute: { minute: string; messages: number }[];
}
